"""Warm-up, stable, decay ("wsd"): the rate holds its peak until validation stops improving, then
decays, so a run's end follows its data instead of a guessed length.

The stage scales every update by a factor in [0, 1]: a linear warm-up from 0, 1 while stable,
then a cosine to `final_learning_rate_fraction` between `decay_start` and `decay_end`. Both
bounds live in the optimizer state, so a checkpoint carries them and a resumed run decays where
the uninterrupted one did. They start at the budget's end (the decay ends at `num_steps`);
`start_decay` moves them earlier when patience is spent.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from unipinrec.config import OptimizerConfig


class StableDecayState(NamedTuple):
  """Updates applied so far, and the updates between which the rate decays."""

  count: jax.Array
  decay_start: jax.Array
  decay_end: jax.Array


def decay_window(step: int, decay_fraction: float) -> tuple[int, int]:
  """(start, end) of a decay that starts after `step` updates: `decay_fraction` of them long."""
  return step, step + max(1, math.ceil(decay_fraction * step))


def budget_window(num_steps: int, decay_fraction: float) -> tuple[int, int]:
  """(start, end) of the decay when validation never ends the stable phase: it ends at
  `num_steps`, `decay_fraction` of the stable steps long."""
  start = max(1, math.floor(num_steps / (1.0 + decay_fraction)))
  return start, max(num_steps, start + 1)


def rate_factor(count: jax.Array, state: StableDecayState, config: OptimizerConfig) -> jax.Array:
  """The factor of the peak rate at update `count` (0 for the first update, as optax counts)."""
  count = count.astype(jnp.float32)
  warm = jnp.minimum(1.0, count / config.warmup_steps) if config.warmup_steps else 1.0
  start = state.decay_start.astype(jnp.float32)
  length = (state.decay_end - state.decay_start).astype(jnp.float32)
  progress = jnp.clip((count - start) / length, 0.0, 1.0)
  final = config.final_learning_rate_fraction
  return warm * (final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))


def warmup_stable_decay(config: OptimizerConfig, num_steps: int) -> optax.GradientTransformation:
  """The stage that scales the updates of a constant-rate optimizer by `rate_factor`."""
  start, end = budget_window(num_steps, config.decay_fraction)

  def init(params: optax.Params) -> StableDecayState:
    del params
    return StableDecayState(*(jnp.asarray(v, jnp.int32) for v in (0, start, end)))

  def update(updates, state: StableDecayState, params=None):
    del params
    factor = rate_factor(state.count, state, config)
    updates = jax.tree.map(lambda u: u * factor.astype(u.dtype), updates)
    return updates, state._replace(count=state.count + 1)

  return optax.GradientTransformation(init, update)


def _is_stage(node) -> bool:
  return isinstance(node, StableDecayState)


def current_window(opt_state: optax.OptState) -> tuple[int, int] | None:
  """The decay's (start, end) in an optimizer state, or None when its schedule is not "wsd"."""
  stages = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_stage) if _is_stage(s)]
  if not stages:
    return None
  return int(stages[0].decay_start), int(stages[0].decay_end)


def _filled_like(array: jax.Array, value: int) -> jax.Array:
  """A new array of `array`'s shape, dtype and sharding holding `value` (every process calls it)."""
  return jax.jit(lambda a: jnp.full_like(a, value), out_shardings=array.sharding)(array)


def start_decay(opt_state: optax.OptState, window: tuple[int, int]) -> optax.OptState:
  """`opt_state` with its decay moved to `window` (`decay_window`), the rest unchanged."""
  start, end = window

  def moved(node):
    if not _is_stage(node):
      return node
    return node._replace(
      decay_start=_filled_like(node.decay_start, start), decay_end=_filled_like(node.decay_end, end)
    )

  return jax.tree.map(moved, opt_state, is_leaf=_is_stage)
