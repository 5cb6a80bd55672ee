"""Compute precision: float32 is unchanged, bfloat16 runs the matmuls in bf16 and keeps the rest.

The float32 reference (`tests/data/float32_reference.npz`) was computed by the code before
bf16 existed; regenerate it only on purpose, from the repository root:
  python -m tests.test_precision tests/data/float32_reference.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unipinrec.config import OptimizerConfig, StepConfig
from unipinrec.losses import LossConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import TrainState, example_batch, make_optimizer
from unipinrec.train.step import blended_loss, make_train_step
from unipinrec.types import TrainBatch

REFERENCE = Path(__file__).parent / "data" / "float32_reference.npz"
B, L, S, C, O, N = 2, 8, 2, 3, 2, 40


def small_config(dtype: str = "float32") -> ModelConfig:
  """A model with every part on: relative bias, item bias, repeats, offsets."""
  return ModelConfig(
    num_items=N,
    num_outcomes=O,
    num_surfaces=2,
    max_length=L,
    embed_dim=16,
    action_dim=8,
    num_layers=2,
    num_heads=2,
    mlp_dim=32,
    head_hidden_dim=16,
    relative_position_buckets=4,
    repeat_buckets=4,
    item_bias=True,
    item_table_multiple=8,
    dtype=dtype,
  )


def small_batch() -> TrainBatch:
  """A random blended batch of the small model's shapes."""
  rng = np.random.default_rng(0)
  lengths = np.array([L, 5], np.int32)
  items = rng.integers(1, N + 1, (B, L)).astype(np.int32)
  items[np.arange(L)[None] >= lengths[:, None]] = 0
  return TrainBatch(
    items=items,
    outcomes=rng.random((B, L, O)) < 0.4,
    times=np.cumsum(rng.exponential(3000.0, (B, L)), axis=1).astype(np.float32),
    surfaces=rng.integers(0, 2, (B, L)).astype(np.int32),
    history_lengths=lengths,
    slate_prefix=np.array([[2, 6], [1, 4]], np.int32),
    slate_times=rng.uniform(0, 1e4, (B, S)).astype(np.float32),
    slate_surfaces=rng.integers(0, 2, (B, S)).astype(np.int32),
    slate_items=rng.integers(1, N + 1, (B, S, C)).astype(np.int32),
    slate_outcomes=rng.random((B, S, C, O)) < 0.3,
  )


STEP = StepConfig(loss=LossConfig(num_random_negatives=16, num_inbatch_negatives=8))


def _setup(dtype: str):
  model = UniPinRec(small_config(dtype))
  masked = jnp.zeros((B, L), bool)
  params = nn.unbox(model.init(jax.random.key(0), example_batch(model, B, S, C), masked))
  # Off the initialisation (zero output kernels, zero biases), so every path carries signal.
  params = jax.tree.map(
    lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params["params"]
  )
  return model, params


def outputs(dtype: str = "float32") -> dict[str, np.ndarray]:
  """The forward pass, the loss and one step's parameters of the small model, by name."""
  model, params = _setup(dtype)
  batch = small_batch()
  forward = model.apply({"params": params}, batch, jnp.zeros((B, L), bool), deterministic=True)
  frequency = jnp.full((N + 1,), -np.log(N), jnp.float32)
  loss, _ = blended_loss(params, model, STEP, batch, frequency, jax.random.key(1))
  optimizer = make_optimizer(OptimizerConfig(warmup_steps=1), 10)
  state = TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=optimizer.init(params))
  step = make_train_step(model, optimizer, STEP, jax.random.key(2))
  stepped, _ = jax.jit(step)(state, batch, frequency)
  named = {
    "queries": forward.queries,
    "offset_queries": forward.offset_queries,
    "history_task_logits": forward.history_task_logits,
    "candidate_task_logits": forward.candidate_task_logits,
    "loss": loss,
  }
  for path, value in jax.tree_util.tree_leaves_with_path(stepped.params):
    named["step/" + "/".join(str(key.key) for key in path)] = value
  return {name: np.asarray(value) for name, value in named.items()}


if __name__ == "__main__":
  np.savez(sys.argv[1], **outputs())
