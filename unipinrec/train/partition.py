"""The state born sharded on the mesh and the train step jitted once over it.

The three seams between the model and the devices: `abstract_state` (shapes
and shardings, nothing allocated), `create_sharded_state` (initialised in
place, never whole on one device) and `jit_train_step` (in/out shardings,
state donated). Host batches become global arrays in `sharding.global_batch`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from unipinrec import sharding
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import TrainState
from unipinrec.train.step import StepConfig, make_train_step
from unipinrec.types import TrainBatch


def _init_fn(
  model: UniPinRec, optimizer: optax.GradientTransformation, batch: TrainBatch
) -> Callable[[jax.Array], TrainState]:
  """rng -> a state whose parameters (and their optimizer moments) are `nn.Partitioned` boxes."""

  def init(rng: jax.Array) -> TrainState:
    action_masked = jnp.zeros(batch.items.shape, dtype=bool)
    params = model.init(rng, batch, action_masked)["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params)
    )

  return init


def _jit_init(model, optimizer, mesh, batch) -> jax.stages.Wrapped:
  init = _init_fn(model, optimizer, batch)
  shardings = sharding.logical_shardings(mesh, jax.eval_shape(init, jax.random.key(0)))
  return jax.jit(lambda rng: nn.unbox(init(rng)), out_shardings=shardings)


def abstract_state(
  model: UniPinRec, optimizer: optax.GradientTransformation, mesh: Mesh, batch: TrainBatch
) -> TrainState:
  """The state's shapes, dtypes and shardings (`jax.ShapeDtypeStruct`s), nothing allocated.

  What a checkpoint is restored into and what the memory plan compiles against.
  """
  return jax.eval_shape(_jit_init(model, optimizer, mesh, batch), jax.random.key(0))


def create_sharded_state(
  model: UniPinRec,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  rng: jax.Array,
  batch: TrainBatch,
) -> tuple[TrainState, TrainState]:
  """Initialises the state directly in its shardings (never whole on one device).

  Optimizer moments are built from the boxed parameters, so they carry the
  same logical axes and are split like the parameters they follow.

  Returns:
    (the state, the tree of its NamedShardings).
  """
  state = _jit_init(model, optimizer, mesh, batch)(rng)
  # Read back from the arrays: the same tree structure as the state, whatever empty
  # nodes the optimizer keeps (optax.multi_transform masks).
  return state, jax.tree.map(lambda x: x.sharding, state)


def jit_train_step(
  model: UniPinRec,
  optimizer: optax.GradientTransformation,
  config: StepConfig,
  seed: int,
  mesh: Mesh,
  state_shardings: TrainState,
) -> jax.stages.Wrapped:
  """The train step jitted once: state in its shardings (donated), batch split, output alike.

  Its randomness is `fold_in(key(seed), step)`, as `make_train_step`'s.
  """
  step = make_train_step(model, optimizer, config, jax.random.key(seed))

  def sharded_step(state: TrainState, batch: TrainBatch, item_log_frequency: jax.Array):
    with sharding.activation_sharding(mesh):
      return step(state, batch, item_log_frequency)

  return jax.jit(
    sharded_step,
    in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )
