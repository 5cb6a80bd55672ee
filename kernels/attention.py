"""Attention with the masks of the unified model, in pure JAX (the kernels' references).

History tokens attend causally to their own prefix; candidates attend to the
history prefix they were requested after and to themselves, never to each
other. `kernels/candidate_attention.py` computes the same in Pallas. Both take
an optional learned recency bias: a per-head table over T5 buckets of the
query-key distance, added to the attention logits.
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


def _logit_bias(table: jax.Array, distance: jax.Array, max_distance: int) -> jax.Array:
  """[H, buckets] table, [T, L] or [B, T, L] distances -> bias broadcast to [B, H, T, L]."""
  bias = jnp.take(table, relative_buckets(distance, table.shape[1], max_distance), axis=1)
  # [T, L] distances are the same for every user: one [H, T, L] bias for the whole batch.
  return bias[None] if distance.ndim == 2 else jnp.moveaxis(bias, 0, 1)


def causal_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  lengths: jax.Array,
  query_positions: jax.Array | None = None,
  relative_bias: jax.Array | None = None,
  max_distance: int = 0,
) -> jax.Array:
  """Causal self-attention over right-padded histories.

  Args:
    q: [B, T, H, Dh] queries; T = L unless `query_positions` picks some.
    k, v: [B, L, H, Dh].
    lengths: [B] valid positions; keys at or past it are masked.
    query_positions: [B, T] history position of each query; 0..L - 1 if omitted.
    relative_bias: [H, buckets] logit bias on the query-key distance; none if omitted.
    max_distance: the distance where the last, logarithmic bucket ends (`relative_buckets`).

  Returns:
    [B, T, H, Dh]; rows past `lengths` are finite but meaningless.
  """
  key_positions = jnp.arange(k.shape[1])
  # Scaling q, not the [B, H, T, L] logits: XLA CPU does not fuse that division.
  q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  # [T] positions shared by the batch, or [B, T] per user.
  positions = jnp.arange(q.shape[1]) if query_positions is None else query_positions
  distance = positions[..., :, None] - key_positions  # [T, L] or [B, T, L]
  allowed = (distance >= 0) & (key_positions < lengths[:, None, None])  # [B, T, L]
  # Products in the inputs' dtype (so are their gradients), the masked softmax in float32.
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
  if relative_bias is not None:
    logits = logits + _logit_bias(relative_bias, distance, max_distance)
  logits = jnp.where(allowed[:, None], logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def candidate_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  history_keys: jax.Array,
  history_values: jax.Array,
  prefix: jax.Array,
  relative_bias: jax.Array | None = None,
  max_distance: int = 0,
) -> jax.Array:
  """Each candidate attends to its history prefix and to itself only.

  Args:
    q, k, v: [B, C, H, Dh] the candidates' own projections.
    history_keys, history_values: [B, L, H, Dh] one layer of the user KV cache.
    prefix: [B, C] history positions visible to each candidate.
    relative_bias: [H, buckets] logit bias on the query-key distance; none if omitted. A
      candidate sits where the next action would, `prefix - j` after history position j
      and at distance 0 from itself.
    max_distance: the distance where the last, logarithmic bucket ends (`relative_buckets`).

  Returns:
    [B, C, H, Dh].
  """
  # Scaling q, not the [B, H, C, L] logits, and contracting in heads-major
  # layouts: on CPU both make ranking on a long cache much cheaper.
  q = jnp.transpose(q, (0, 2, 1, 3)) / jnp.sqrt(q.shape[-1]).astype(q.dtype)  # [B, H, C, Dh]
  history_keys, history_values = (
    jnp.transpose(x, (0, 2, 1, 3)) for x in (history_keys, history_values)
  )
  distance = prefix[:, :, None] - jnp.arange(history_keys.shape[2])  # [B, C, L]
  # Products in the inputs' dtype, the softmax in float32, as in `causal_attention`.
  history_logits = jnp.einsum("bhcd,bhld->bhcl", q, history_keys).astype(jnp.float32)
  self_logits = jnp.einsum("bhcd,bchd->bhc", q, k).astype(jnp.float32)
  if relative_bias is not None:
    history_logits = history_logits + _logit_bias(relative_bias, distance, max_distance)
    self_logits = self_logits + relative_bias[None, :, 0, None]  # distance 0 is bucket 0
  history_logits = jnp.where(
    (distance > 0)[:, None], history_logits, jnp.finfo(history_logits.dtype).min
  )
  # The softmax over [history, self] by hand: concatenating the self logit to the
  # [B, H, C, L] history logits (and slicing it off again) copies them twice, which
  # made ranking on the cache memory-bound.
  peak = jnp.maximum(jnp.max(history_logits, axis=-1), self_logits)  # [B, H, C]
  history_weights = jnp.exp(history_logits - peak[..., None])
  self_weights = jnp.exp(self_logits - peak)
  total = jnp.sum(history_weights, axis=-1) + self_weights  # [B, H, C]
  history_weights = history_weights.astype(v.dtype)
  from_history = jnp.einsum("bhcl,bhld->bhcd", history_weights, history_values)
  from_self = self_weights[..., None] * jnp.transpose(v, (0, 2, 1, 3))
  attended = (from_history.astype(jnp.float32) + from_self) / total[..., None]
  return jnp.transpose(attended.astype(v.dtype), (0, 2, 1, 3))
