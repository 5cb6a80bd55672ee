"""The train state, its optimizer, and the example batch that shapes it."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unipinrec.config import OptimizerConfig
from unipinrec.model.item_encoder import FROZEN_PREFIX
from unipinrec.model.unified import UniPinRec
from unipinrec.train import schedule
from unipinrec.types import TrainBatch


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; a pytree that orbax saves as is."""

  step: jax.Array
  params: dict
  opt_state: optax.OptState


# Tables read by lookup learn at the embedding rate, with Adam and no weight decay: at the
# dense rate the relative-position bias barely moves within a run; the history-bias tables
# (`repeat_bias`) are lookups too, each row moved only by the repeats that fall in its bucket.
EMBEDDING_TABLES = (
  "item_embedding",
  "hashed_embedding",
  "side_embedding",
  "item_bias",
  "relative_bias",
  "repeat_bias",
)


def _schedule(config: OptimizerConfig, peak: float, num_steps: int) -> optax.ScalarOrSchedule:
  if config.schedule == "wsd":  # a constant peak: the wsd stage after the groups shapes it
    return peak
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=peak,
    warmup_steps=config.warmup_steps,
    decay_steps=max(num_steps, config.warmup_steps + 1),
    end_value=peak * config.final_learning_rate_fraction,
  )


def _param_group(path, _) -> str:
  names = {str(getattr(key, "key", "")) for key in path}
  if any(name.startswith(FROZEN_PREFIX) for name in names):
    return "frozen"
  return "embedding" if names & set(EMBEDDING_TABLES) else "dense"


class ParameterAverageState(NamedTuple):
  """An exponential moving average of the parameters, from zero, and how many steps it holds."""

  count: jax.Array
  average: optax.Params


def parameter_average(decay: float) -> optax.GradientTransformation:
  """Keeps a moving average of the parameters after each update; the updates pass unchanged.

  As a stage of the optimizer its average lives in the optimizer state: it is
  sharded like the parameters it follows and checkpointed with them.
  """

  def init(params: optax.Params) -> ParameterAverageState:
    return ParameterAverageState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

  def update(updates, state: ParameterAverageState, params=None):
    new_params = optax.apply_updates(params, updates)
    average = jax.tree.map(lambda a, p: decay * a + (1 - decay) * p, state.average, new_params)
    return updates, ParameterAverageState(state.count + 1, average)

  return optax.GradientTransformation(init, update)


def make_optimizer(config: OptimizerConfig, num_steps: int) -> optax.GradientTransformation:
  """Adam on the lookup tables, AdamW on the rest, after global-norm clipping, on a schedule.

  The item features (`item_encoder.FROZEN_PREFIX`) are data: no update and no optimizer state.

  The "cosine" schedule decays over the run's `num_steps`; "wsd" adds a stage after the groups
  (`schedule.warmup_stable_decay`) whose decay validation can start early.

  With `ema_decay` a last stage keeps the parameters' moving average (`evaluated_params`).
  """
  groups = {
    "embedding": optax.adam(_schedule(config, config.embedding_learning_rate, num_steps)),
    "dense": optax.adamw(
      _schedule(config, config.learning_rate, num_steps), weight_decay=config.weight_decay
    ),
    "frozen": optax.set_to_zero(),
  }
  stages = [
    optax.clip_by_global_norm(config.clip_norm),
    optax.multi_transform(
      groups, lambda params: jax.tree_util.tree_map_with_path(_param_group, params)
    ),
  ]
  if config.schedule == "wsd":
    stages.append(schedule.warmup_stable_decay(config, num_steps))
  if config.ema_decay:
    stages.append(parameter_average(config.ema_decay))
  return optax.chain(*stages)


def evaluated_params(state: TrainState, decay: float):
  """The parameters evaluation reads: the debiased moving average where the optimizer keeps one.

  Args:
    state: a train state of `make_optimizer(config)`.
    decay: that config's `ema_decay`; 0 returns `state.params`.
  """
  if not decay:
    return state.params
  average = state.opt_state[-1]
  count = int(average.count)
  if count == 0:
    return state.params
  scale = 1.0 / (1.0 - decay**count)
  return jax.tree.map(lambda a: a * scale, average.average)


def example_batch(
  model: UniPinRec, batch_size: int, max_slates: int, slate_size: int
) -> TrainBatch:
  """A zero batch of the right shapes, for initialisation and shape inference."""
  cfg = model.config
  length, outcomes = cfg.max_length, cfg.num_outcomes
  return TrainBatch(
    items=np.zeros((batch_size, length), np.int32),
    outcomes=np.zeros((batch_size, length, outcomes), bool),
    times=np.zeros((batch_size, length), np.float32),
    surfaces=np.zeros((batch_size, length), np.int32),
    history_lengths=np.ones((batch_size,), np.int32),
    slate_prefix=np.ones((batch_size, max_slates), np.int32),
    slate_times=np.zeros((batch_size, max_slates), np.float32),
    slate_surfaces=np.zeros((batch_size, max_slates), np.int32),
    slate_items=np.zeros((batch_size, max_slates, slate_size), np.int32),
    slate_outcomes=np.zeros((batch_size, max_slates, slate_size, outcomes), bool),
  )


def initial_params(model: UniPinRec, batch: TrainBatch, seed: int = 0) -> dict:
  """The model's parameters for `batch`'s shapes (unboxed), from `jax.random.key(seed)`.

  One compiled program: op by op, initialisation compiles each of its small operations.
  """
  masked = jnp.zeros(batch.items.shape, bool)
  init = jax.jit(lambda rng: nn.unbox(model.init(rng, batch, masked))["params"])
  return init(jax.random.key(seed))
