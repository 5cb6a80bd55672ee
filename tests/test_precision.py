"""Compute precision: float32 is unchanged, bfloat16 runs the matmuls in bf16 and keeps the rest.

The float32 reference (`tests/data/float32_reference.npz`) was computed by the code before
bf16 existed; regenerate it only on purpose, from the repository root:
  python -m tests.test_precision tests/data/float32_reference.npz
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipinrec.config import OptimizerConfig, StepConfig
from unipinrec.losses import LossConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.transformer import Transformer
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import TrainState, example_batch, initial_params, make_optimizer
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


# A day's window of positives (up to 8): the loss the float32 reference was made with.
STEP = StepConfig(
  loss=LossConfig(
    num_random_negatives=16,
    num_inbatch_negatives=8,
    future_window_seconds=86400.0,
    max_future_positives=8,
  )
)


def _setup(dtype: str):
  model = UniPinRec(small_config(dtype))
  params = initial_params(model, example_batch(model, B, S, C))
  # Off the initialisation (zero output kernels, zero biases), so every path carries signal.
  params = jax.tree.map(
    lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params
  )
  return model, params


@functools.cache
def outputs(dtype: str = "float32") -> dict[str, np.ndarray]:
  """The forward pass, the loss and one step's parameters of the small model, by name."""
  model, params = _setup(dtype)
  batch = small_batch()
  frequency = jnp.full((N + 1,), -np.log(N), jnp.float32)
  optimizer = make_optimizer(OptimizerConfig(warmup_steps=1), 10)
  step = make_train_step(model, optimizer, STEP, jax.random.key(2))

  @jax.jit
  def run(params, batch):
    forward = model.apply({"params": params}, batch, jnp.zeros((B, L), bool), deterministic=True)
    loss, _ = blended_loss(params, model, STEP, batch, frequency, jax.random.key(1))
    state = TrainState(jnp.zeros([], jnp.int32), params, optimizer.init(params))
    return forward, loss, step(state, batch, frequency)[0].params

  forward, loss, stepped = run(params, batch)
  named = {
    "queries": forward.queries,
    "offset_queries": forward.offset_queries,
    "history_task_logits": forward.history_task_logits,
    "candidate_task_logits": forward.candidate_task_logits,
    "loss": loss,
  }
  for path, value in jax.tree_util.tree_leaves_with_path(stepped):
    named["step/" + "/".join(str(key.key) for key in path)] = value
  return {name: np.asarray(value) for name, value in named.items()}


def _dot_operand_types(text: str) -> list[str]:
  """The operand types of every dot_general in lowered StableHLO text, e.g. 'tensor<2x8xbf16>'."""
  signatures = re.findall(r"stablehlo\.dot_general [^\n]*: \(([^)]*)\) ->", text)
  return [operand.strip() for signature in signatures for operand in signature.split(",")]


def _transformer_gradient_hlo(dtype: str) -> str:
  """Lowered text of the transformer's forward and backward: encode, then candidates on it."""
  transformer = Transformer(small_config(dtype))
  tokens = jnp.ones((B, L, transformer.config.width), transformer.config.compute_dtype)
  lengths = jnp.array([L, 5], jnp.int32)
  prefix = jnp.array([[1, 2, 3], [2, 3, 5]], jnp.int32)
  params = transformer.init(jax.random.key(0), tokens, lengths, method="encode")

  def total(params, tokens):
    states, cache = transformer.apply(params, tokens, lengths, method="encode")
    candidates = transformer.apply(params, tokens[:, :C], cache, prefix, method="attend_candidates")
    return states.astype(jnp.float32).sum() + candidates.astype(jnp.float32).sum()

  return jax.jit(jax.grad(total, argnums=(0, 1))).lower(params, tokens).as_text()


@pytest.mark.slow  # compiles the whole train step
def test_float32_is_unchanged_by_the_bf16_path():
  # Equal on the machine and XLA flags that made the reference; the tolerance, far below bf16's
  # rounding (about 4e-3), only allows for another CPU's or compile's summation order.
  reference = np.load(REFERENCE)
  got = outputs("float32")
  assert sorted(got) == sorted(reference.files)
  for name, value in got.items():
    np.testing.assert_allclose(value, reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_bf16_transformer_matmuls_take_bf16_operands_forward_and_backward():
  operands = _dot_operand_types(_transformer_gradient_hlo("bfloat16"))
  # Per layer, history and candidates: qkv, two attention products, output, two MLP layers
  # (three attention products for candidates), each with its gradients.
  assert len(operands) >= 2 * 2 * 6 * 3 * 2
  assert all(operand.endswith("xbf16>") for operand in operands), set(operands)


def test_float32_transformer_matmuls_stay_float32():
  operands = _dot_operand_types(_transformer_gradient_hlo("float32"))
  assert operands and all(operand.endswith("xf32>") for operand in operands), set(operands)


@pytest.mark.slow  # compiles the whole train step
def test_bf16_train_step_keeps_float32_params_optimizer_state_and_a_finite_loss():
  got = outputs("bfloat16")
  reference = np.load(REFERENCE)
  assert all(value.dtype == np.float32 for value in got.values())
  assert np.isfinite(got["loss"])
  # bf16 moves the figures by its rounding, no more: the same model, computed coarser.
  np.testing.assert_allclose(got["loss"], reference["loss"], rtol=1e-2)
  for name in ("queries", "history_task_logits", "candidate_task_logits"):
    np.testing.assert_allclose(got[name], reference[name], atol=0.05, err_msg=name)


def test_bf16_model_computes_in_bf16_and_returns_float32_where_promised():
  model, params = _setup("bfloat16")
  batch = small_batch()

  def forward_pass(params):
    return model.apply({"params": params}, batch, jnp.zeros((B, L), bool), True)

  assert "bf16" in jax.jit(forward_pass).lower(params).as_text()
  forward = jax.eval_shape(forward_pass, params)
  # Unit queries (L2 norm in float32) and outcome logits leave in float32.
  assert forward.queries.dtype == jnp.float32
  assert forward.candidate_task_logits.dtype == jnp.float32
  optimizer = make_optimizer(OptimizerConfig(), 10)
  moments = jax.eval_shape(optimizer.init, params)
  assert {leaf.dtype for leaf in jax.tree.leaves(moments) if leaf.ndim} == {jnp.dtype("float32")}


def test_unknown_dtype_is_refused():
  with pytest.raises(ValueError, match="dtype='float16'"):
    small_config("float16")


if __name__ == "__main__":
  np.savez(sys.argv[1], **outputs())
