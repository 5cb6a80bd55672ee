"""The sampled softmax's negative log-sum-exp in plain JAX, a chunk of anchors at a time.

`sampled_softmax.reference_negative_logsumexp` materialises the [A, Q, M]
logits, their mask, exponentials and gradient: with 76,800 queries and 1,682
negatives that is half a gigabyte per array, written to and read back from
main memory several times a step. Here a `lax.map` over chunks of anchors
keeps each chunk's logits small enough to stay in cache, and the backward pass
(custom VJP) recomputes them from the saved log-sum-exp, as the Pallas kernel
does tile by tile, instead of storing them: the same result in less memory,
on any backend. An optional [A, Q, M] additive bias (the history bias of
`model.repeat_buckets`) is an input and its gradient an output at full size:
only the logits stay chunked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels.tiling import pad_to


def _chunks(x: jax.Array | None, chunk: int) -> jax.Array | None:
  """[A, ...] -> [A / chunk, chunk, ...], chunk i holding anchors i, i + A / chunk, ...

  Strided, not contiguous: anchors are split over devices by their leading
  (batch) part, so every chunk keeps that split, and the loop runs over an
  axis that no device holds alone.
  """
  if x is None:
    return None
  return jnp.swapaxes(x.reshape((chunk, x.shape[0] // chunk) + x.shape[1:]), 0, 1)


def _unchunk(x: jax.Array) -> jax.Array:
  """The inverse of `_chunks`."""
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def _logits(queries, vectors, log_q, items, excluded, inv_temperature, mask, bias):
  """One chunk's [c, Q, M] logits and whether each negative counts for its anchor."""
  logits = jnp.einsum("cqd,md->cqm", queries, vectors) * inv_temperature - log_q
  if bias is not None:
    logits = logits + bias
  hit = jnp.any(excluded[:, :, None] == items, axis=1)  # [c, M]
  if mask is not None:
    hit = hit | mask
  usable = (items > 0)[None, :] & ~hit
  return logits, usable[:, None, :]


def _forward(queries, vectors, log_q, items, excluded, mask, bias, inv_temperature, chunk):
  def one(args):
    chunk_queries, chunk_excluded, chunk_mask, chunk_bias = args
    logits, usable = _logits(
      chunk_queries, vectors, log_q, items, chunk_excluded, inv_temperature, chunk_mask, chunk_bias
    )
    return jax.nn.logsumexp(jnp.where(usable, logits, -jnp.inf), axis=-1)

  chunked = tuple(_chunks(x, chunk) for x in (queries, excluded, mask, bias))
  return _unchunk(jax.lax.map(one, chunked))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _chunked_lse(queries, vectors, log_q, items, excluded, mask, bias, inv_temperature, chunk):
  return _forward(queries, vectors, log_q, items, excluded, mask, bias, inv_temperature, chunk)


def _chunked_lse_fwd(queries, vectors, log_q, items, excluded, mask, bias, inv_temperature, chunk):
  lse = _forward(queries, vectors, log_q, items, excluded, mask, bias, inv_temperature, chunk)
  return lse, (queries, vectors, log_q, items, excluded, mask, bias, lse)


def _chunked_lse_bwd(inv_temperature, chunk, residuals, cotangent):
  queries, vectors, log_q, items, excluded, mask, bias, lse = residuals

  def visit(carry, args):
    vectors_grad, log_q_grad = carry
    chunk_queries, chunk_excluded, chunk_mask, chunk_bias, chunk_lse, chunk_cotangent = args
    logits, usable = _logits(
      chunk_queries, vectors, log_q, items, chunk_excluded, inv_temperature, chunk_mask, chunk_bias
    )
    # d lse / d logit = softmax weight; rows without a usable negative (lse -inf) get none.
    usable = usable & jnp.isfinite(chunk_lse)[..., None]
    weights = jnp.where(usable, jnp.exp(logits - chunk_lse[..., None]), 0.0)
    weights = weights * chunk_cotangent[..., None]
    queries_grad = jnp.einsum("cqm,md->cqd", weights, vectors) * inv_temperature
    vectors_grad = (
      vectors_grad + jnp.einsum("cqm,cqd->md", weights, chunk_queries) * inv_temperature
    )
    # An additive bias's gradient is the weight of its logit.
    bias_grad = None if chunk_bias is None else weights
    return (vectors_grad, log_q_grad - weights.sum((0, 1))), (queries_grad, bias_grad)

  (vectors_grad, log_q_grad), (queries_grad, bias_grad) = jax.lax.scan(
    visit,
    (jnp.zeros_like(vectors), jnp.zeros_like(log_q)),
    tuple(_chunks(x, chunk) for x in (queries, excluded, mask, bias, lse, cotangent)),
  )
  bias_grad = None if bias is None else _unchunk(bias_grad)
  # Ids and masks take no gradient.
  return _unchunk(queries_grad), vectors_grad, log_q_grad, None, None, None, bias_grad


_chunked_lse.defvjp(_chunked_lse_fwd, _chunked_lse_bwd)


def chunked_negative_logsumexp(
  queries: jax.Array,
  negative_vectors: jax.Array,
  negative_log_q: jax.Array,
  negative_items: jax.Array,
  excluded_items: jax.Array,
  temperature: float,
  excluded_mask: jax.Array | None = None,
  negative_bias: jax.Array | None = None,
  *,
  chunk_anchors: int,
) -> jax.Array:
  """`reference_negative_logsumexp`, `chunk_anchors` anchors at a time (same arguments).

  Returns:
    [A, Q]; -inf where an anchor has no usable negative (its gradient is then 0).
  """
  anchors = queries.shape[0]
  chunk = max(1, min(chunk_anchors, anchors))
  padded = -(-anchors // chunk) * chunk
  # Padded anchors are zero queries whose rows nothing reads.
  mask = None if excluded_mask is None else pad_to(excluded_mask, 0, padded)
  bias = None if negative_bias is None else pad_to(negative_bias.astype(queries.dtype), 0, padded)
  lse = _chunked_lse(
    pad_to(queries, 0, padded),
    negative_vectors,
    negative_log_q.astype(queries.dtype),
    negative_items,
    pad_to(excluded_items, 0, padded, -1),
    mask,
    bias,
    1.0 / temperature,
    chunk,
  )
  return lse[:anchors]
