"""Attention with the masks of the unified model, in pure JAX (the kernels' references).

History tokens attend causally to their own prefix; candidates attend to the
history prefix they were requested after and to themselves, never to each
other. `kernels/candidate_attention.py` computes the same in Pallas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array) -> jax.Array:
  """Causal self-attention over right-padded histories.

  Args:
    q, k, v: [B, L, H, Dh].
    lengths: [B] valid positions; keys at or past it are masked.

  Returns:
    [B, L, H, Dh]; rows past `lengths` are finite but meaningless.
  """
  seq_len = q.shape[1]
  positions = jnp.arange(seq_len)
  allowed = (positions[None, :] <= positions[:, None])[None] & (
    positions[None, None, :] < lengths[:, None, None]
  )  # [B, L, L]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  logits = jnp.where(allowed[:, None], logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def candidate_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  history_keys: jax.Array,
  history_values: jax.Array,
  prefix: jax.Array,
) -> jax.Array:
  """Each candidate attends to its history prefix and to itself only.

  Args:
    q, k, v: [B, C, H, Dh] the candidates' own projections.
    history_keys, history_values: [B, L, H, Dh] one layer of the user KV cache.
    prefix: [B, C] history positions visible to each candidate.

  Returns:
    [B, C, H, Dh].
  """
  scale = jnp.sqrt(q.shape[-1]).astype(q.dtype)
  history_logits = jnp.einsum("bchd,blhd->bhcl", q, history_keys) / scale
  visible = jnp.arange(history_keys.shape[1])[None, None, :] < prefix[:, :, None]  # [B, C, L]
  history_logits = jnp.where(visible[:, None], history_logits, jnp.finfo(q.dtype).min)
  self_logits = jnp.einsum("bchd,bchd->bhc", q, k) / scale
  logits = jnp.concatenate([history_logits, self_logits[..., None]], axis=-1)
  weights = jax.nn.softmax(logits, axis=-1)
  from_history = jnp.einsum("bhcl,blhd->bchd", weights[..., :-1], history_values)
  from_self = jnp.transpose(weights[..., -1], (0, 2, 1))[..., None] * v
  return from_history + from_self
