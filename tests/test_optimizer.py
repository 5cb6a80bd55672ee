"""The optimizer: its learning-rate groups, and its moving average against a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unipinrec.config import OptimizerConfig
from unipinrec.train.state import (
  ParameterAverageState,
  TrainState,
  evaluated_params,
  make_optimizer,
)

DECAY = 0.9
STEPS = 7
# Large rates, so that the average stands well apart from the last step's parameters.
RATES = dict(learning_rate=0.1, embedding_learning_rate=0.1, warmup_steps=2)
NUM_STEPS = 10


def _params() -> dict:
  rng = np.random.default_rng(0)
  return {
    "tokenizer": {"item_embedding": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)},
    "head": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)},
  }


def _train(config: OptimizerConfig) -> tuple[TrainState, list[dict]]:
  """STEPS updates on random gradients; the state and every step's parameters after it."""
  optimizer = make_optimizer(config, NUM_STEPS)
  params = _params()
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))
  rng = np.random.default_rng(1)
  trajectory = []
  for _ in range(STEPS):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    trajectory.append(jax.tree.map(np.asarray, params))
  return state, trajectory


def test_evaluated_params_are_the_debiased_moving_average_of_the_steps():
  config = OptimizerConfig(**RATES, ema_decay=DECAY)
  state, trajectory = _train(config)
  # sum_t (1 - d) d^(N - t) p_t / (1 - d^N): each step's parameters, newest weighted most.
  weights = np.array([(1 - DECAY) * DECAY ** (STEPS - t) for t in range(1, STEPS + 1)])
  weights /= 1 - DECAY**STEPS
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)
  expected = jax.tree.map(lambda *ps: np.tensordot(weights, np.stack(ps), axes=1), *trajectory)
  got = evaluated_params(state, DECAY)
  jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6), got, expected)
  # The average is not the last step's parameters: the test above could fail.
  last = trajectory[-1]["head"]["kernel"]
  assert np.abs(np.asarray(got["head"]["kernel"]) - last).max() > 0.05


def test_the_average_leaves_the_updates_unchanged():
  plain, _ = _train(OptimizerConfig(**RATES))
  averaged, _ = _train(OptimizerConfig(**RATES, ema_decay=DECAY))
  jax.tree.map(np.testing.assert_array_equal, plain.params, averaged.params)
  assert isinstance(averaged.opt_state[-1], ParameterAverageState)
  assert int(averaged.opt_state[-1].count) == STEPS


def test_without_a_decay_evaluation_reads_the_last_parameters():
  state, trajectory = _train(OptimizerConfig(**RATES))
  assert not any(isinstance(s, ParameterAverageState) for s in state.opt_state)
  jax.tree.map(np.testing.assert_array_equal, evaluated_params(state, 0.0), trajectory[-1])


def test_before_any_step_evaluation_reads_the_initial_parameters():
  config = OptimizerConfig(ema_decay=DECAY)
  params = _params()
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=make_optimizer(config, NUM_STEPS).init(params),
  )
  jax.tree.map(np.testing.assert_array_equal, evaluated_params(state, DECAY), params)


def test_lookup_tables_learn_at_the_embedding_rate_and_the_rest_at_the_dense_rate():
  """Adam's early steps move each weight by its group's rate, whatever the gradient's size: the
  item table, the attention-bias and history-bias tables by one rate, the kernels by the other."""
  config = OptimizerConfig(
    learning_rate=1e-3, embedding_learning_rate=1e-1, warmup_steps=1, weight_decay=0.0
  )
  optimizer = make_optimizer(config, NUM_STEPS)
  params = {
    "tokenizer": {"item_embedding": jnp.ones((4, 2))},
    "block_0": {"relative_bias": jnp.ones((2, 3))},
    "repeat_bias": {"recency": jnp.ones((4, 3)), "frequency": jnp.ones((3, 3))},
    "head": {"kernel": jnp.ones((2, 2))},
  }
  state = optimizer.init(params)
  for _ in range(2):  # the warm-up's first step has a rate of 0
    updates, state = optimizer.update(jax.tree.map(jnp.ones_like, params), state, params)
  rates = jax.tree.map(lambda u: float(jnp.max(jnp.abs(u))), updates)
  tables = (*rates["block_0"].values(), *rates["repeat_bias"].values())
  for table in (rates["tokenizer"]["item_embedding"], *tables):
    np.testing.assert_allclose(table, 1e-1, rtol=1e-3)
  np.testing.assert_allclose(rates["head"]["kernel"], 1e-3, rtol=1e-3)
