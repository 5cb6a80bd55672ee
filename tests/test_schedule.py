"""The "wsd" schedule: its rate against a NumPy reference, the optimizer it scales against optax's
own scheduled Adam(W), and a decay that validation moves earlier."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unipinrec.config import OptimizerConfig, from_mapping
from unipinrec.errors import ConfigError
from unipinrec.train import schedule
from unipinrec.train.state import make_optimizer

NUM_STEPS = 30
CONFIG = OptimizerConfig(
  learning_rate=0.01,
  embedding_learning_rate=0.1,
  warmup_steps=4,
  schedule="wsd",
  decay_fraction=0.5,
  final_learning_rate_fraction=0.1,
)


def _reference_factor(count: int, start: int, end: int) -> float:
  """Linear warm-up over 4 updates, 1 until `start`, a cosine to 0.1 at `end`."""
  warm = min(1.0, count / 4)
  progress = min(max((count - start) / (end - start), 0.0), 1.0)
  return warm * (0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * progress)))


def _factors(state: schedule.StableDecayState, counts) -> np.ndarray:
  return np.array([float(schedule.rate_factor(jnp.asarray(c), state, CONFIG)) for c in counts])


def test_the_budget_window_ends_the_decay_at_num_steps():
  assert schedule.budget_window(NUM_STEPS, 0.5) == (20, 30)
  assert schedule.budget_window(1400, 0.3) == (1076, 1400)
  # Started by validation after 1,000 updates: 30% of them long.
  assert schedule.decay_window(1000, 0.3) == (1000, 1300)


def test_the_rate_warms_up_holds_then_decays_as_the_reference():
  state = schedule.warmup_stable_decay(CONFIG, NUM_STEPS).init({})
  counts = range(36)
  expected = [_reference_factor(c, 20, 30) for c in counts]
  np.testing.assert_allclose(_factors(state, counts), expected, rtol=1e-6, atol=1e-7)
  assert _factors(state, [0, 10, 19, 25, 30, 35]).round(4).tolist() == [
    0.0,
    1.0,
    1.0,
    0.55,
    0.1,
    0.1,
  ]


def test_start_decay_moves_the_window_and_the_rate_follows():
  optimizer = make_optimizer(CONFIG, NUM_STEPS)
  opt_state = optimizer.init({"head": {"kernel": jnp.ones((2, 2))}})
  assert schedule.current_window(opt_state) == (20, 30)
  moved = schedule.start_decay(opt_state, schedule.decay_window(8, 0.5))
  assert schedule.current_window(moved) == (8, 12)
  assert schedule.current_window(opt_state) == (20, 30)  # a new state: the old one is unchanged
  (stage,) = [s for s in moved if isinstance(s, schedule.StableDecayState)]
  np.testing.assert_allclose(
    _factors(stage, range(20)), [_reference_factor(c, 8, 12) for c in range(20)], rtol=1e-6
  )


def test_a_cosine_optimizer_has_no_window():
  assert (
    schedule.current_window(make_optimizer(OptimizerConfig(), 10).init({"w": jnp.ones(2)})) is None
  )


def test_wsd_updates_equal_optax_adam_on_the_same_rate():
  """The stage after constant-rate Adam(W) gives the updates of Adam(W) whose rate is the schedule,
  weight decay included (optax scales it by the rate too)."""
  params = {
    "tokenizer": {"item_embedding": jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)))},
    "head": {"kernel": jnp.asarray(np.random.default_rng(1).normal(size=(3, 2)))},
  }
  params = jax.tree.map(lambda p: p.astype(jnp.float32), params)

  def rate(peak):
    return lambda count: peak * _reference_factor(int(count), 20, 30)

  labels = {"tokenizer": {"item_embedding": "embedding"}, "head": {"kernel": "dense"}}
  reference = optax.chain(
    optax.clip_by_global_norm(CONFIG.clip_norm),
    optax.multi_transform(
      {
        "embedding": optax.adam(rate(CONFIG.embedding_learning_rate)),
        "dense": optax.adamw(rate(CONFIG.learning_rate), weight_decay=CONFIG.weight_decay),
      },
      labels,
    ),
  )
  optimizer = make_optimizer(CONFIG, NUM_STEPS)
  state, ref_state = optimizer.init(params), reference.init(params)
  rng = np.random.default_rng(2)
  moved = 0.0
  for _ in range(NUM_STEPS):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, state = optimizer.update(grads, state, params)
    expected, ref_state = reference.update(grads, ref_state, params)
    jax.tree.map(
      lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-5, atol=1e-9), updates, expected
    )
    moved += float(jnp.abs(updates["head"]["kernel"]).sum())
  assert moved > 0.01  # the updates compared were not all zero


def test_an_unknown_schedule_is_refused_by_name():
  with pytest.raises(ConfigError, match="optimizer.schedule='linear'"):
    from_mapping({"optimizer": {"schedule": "linear"}})
  with pytest.raises(ConfigError, match="optimizer.decay_fraction=0"):
    from_mapping({"optimizer": {"decay_fraction": 0}})
