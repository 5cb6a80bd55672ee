"""Attention with the masks of the unified model, in pure JAX (the kernels' references).

History tokens attend causally to their own prefix; candidates attend to the
history prefix they were requested after and to themselves, never to each
other. `kernels/candidate_attention.py` computes the same in Pallas (without
the optional relative-position bias).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def relative_buckets(distance: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
  """Distances (query position - key position, >= 0) -> int32 buckets in [0, num_buckets).

  T5's scheme: the first half of the buckets hold one distance each, the rest
  split the distances up to `max_distance` logarithmically; farther ones share
  the last bucket. Recent actions get their own weight, old ones share one.
  """
  exact = num_buckets // 2
  distance = jnp.maximum(distance, 0)
  if max_distance <= exact:
    return jnp.minimum(distance, num_buckets - 1).astype(jnp.int32)
  scale = (num_buckets - exact) / np.log(max_distance / exact)
  far = exact + jnp.floor(jnp.log(jnp.maximum(distance, exact) / exact) * scale)
  buckets = jnp.where(distance < exact, distance, jnp.minimum(far, num_buckets - 1))
  return buckets.astype(jnp.int32)


def causal_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  lengths: jax.Array,
  query_positions: jax.Array | None = None,
  bias: jax.Array | None = None,
) -> jax.Array:
  """Causal self-attention over right-padded histories.

  Args:
    q: [B, T, H, Dh] queries; T = L unless `query_positions` picks some.
    k, v: [B, L, H, Dh].
    lengths: [B] valid positions; keys at or past it are masked.
    query_positions: [B, T] history position of each query; 0..L - 1 if omitted.
    bias: added to the [B, H, T, L] logits before masking (relative positions); none if omitted.

  Returns:
    [B, T, H, Dh]; rows past `lengths` are finite but meaningless.
  """
  key_positions = jnp.arange(k.shape[1])
  # Scaling q, not the [B, H, T, L] logits: XLA CPU does not fuse that division.
  q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  if query_positions is None:
    query_positions = jnp.broadcast_to(jnp.arange(q.shape[1]), q.shape[:2])
  allowed = (key_positions[None, None, :] <= query_positions[:, :, None]) & (
    key_positions[None, None, :] < lengths[:, None, None]
  )  # [B, T, L]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  if bias is not None:
    logits = logits + bias
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
  history_bias: jax.Array | None = None,
  self_bias: jax.Array | None = None,
) -> jax.Array:
  """Each candidate attends to its history prefix and to itself only.

  Args:
    q, k, v: [B, C, H, Dh] the candidates' own projections.
    history_keys, history_values: [B, L, H, Dh] one layer of the user KV cache.
    prefix: [B, C] history positions visible to each candidate.
    history_bias: added to the [B, H, C, L] logits on the history; none if omitted.
    self_bias: [H] added to each candidate's logit on itself; none if omitted.

  Returns:
    [B, C, H, Dh].
  """
  # Scaling q, not the [B, H, C, L] logits, and contracting in heads-major
  # layouts: on CPU both halved the time of ranking on a 1,000-key cache.
  q = jnp.transpose(q, (0, 2, 1, 3)) / jnp.sqrt(q.shape[-1]).astype(q.dtype)  # [B, H, C, Dh]
  history_keys, history_values = (
    jnp.transpose(x, (0, 2, 1, 3)) for x in (history_keys, history_values)
  )
  history_logits = jnp.einsum("bhcd,bhld->bhcl", q, history_keys)
  if history_bias is not None:
    history_logits = history_logits + history_bias
  visible = jnp.arange(history_keys.shape[2])[None, None, :] < prefix[:, :, None]  # [B, C, L]
  history_logits = jnp.where(visible[:, None], history_logits, jnp.finfo(q.dtype).min)
  self_logits = jnp.einsum("bhcd,bchd->bhc", q, k)
  if self_bias is not None:
    self_logits = self_logits + self_bias[:, None]
  # The softmax over [history, self] by hand: concatenating the self logit to the
  # [B, H, C, L] history logits (and slicing it off again) copies them twice, which
  # made ranking on the cache memory-bound.
  peak = jnp.maximum(jnp.max(history_logits, axis=-1), self_logits)  # [B, H, C]
  history_weights = jnp.exp(history_logits - peak[..., None])
  self_weights = jnp.exp(self_logits - peak)
  total = jnp.sum(history_weights, axis=-1) + self_weights  # [B, H, C]
  from_history = jnp.einsum("bhcl,bhld->bhcd", history_weights, history_values)
  from_self = self_weights[..., None] * jnp.transpose(v, (0, 2, 1, 3))
  return jnp.transpose((from_history + from_self) / total[..., None], (0, 2, 1, 3))
