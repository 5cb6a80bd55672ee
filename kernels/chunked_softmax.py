"""The sampled softmax's negative log-sum-exp in plain JAX, a chunk of anchors at a time.

`sampled_softmax.reference_negative_logsumexp` materialises the [A, Q, M]
logits, their mask, exponentials and gradient: with 76,800 queries and 1,682
negatives that is half a gigabyte per array, written to and read back from
main memory several times a step. Here a `lax.map` over chunks of anchors
keeps each chunk's logits small enough to stay in cache, and the backward pass
(custom VJP) recomputes them from the saved log-sum-exp, as the Pallas kernel
does tile by tile, instead of storing them: the same result in less memory,
on any backend.

Only the anchors marked `active` are scored (those with a positive: on a sparse log most
of a padded history is padding). Each of `groups` equal parts of the anchors (the batch's
shards) is sorted active first and dealt across the chunks, so a chunk holds the same
share of every part, the device split is kept, and the chunks past the longest part's
active anchors are skipped in both passes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels.tiling import pad_to


class _Deal:
  """Anchors [A, ...] <-> chunks [n, G * s, ...]: each group sorted active first, s a chunk."""

  def __init__(self, active: jax.Array, groups: int, chunk: int):
    anchors = active.shape[0]
    if anchors % groups:
      raise ValueError(f"{anchors} anchors do not split into {groups} groups")
    self.groups, self.per_group = groups, anchors // groups
    self.width = max(1, min(chunk // groups, self.per_group))
    self.padded = -(-self.per_group // self.width) * self.width
    grouped = pad_to(active.reshape(groups, self.per_group), 1, self.padded, False)
    self.order = jnp.argsort(~grouped, axis=1, stable=True)  # [G, P]: active first
    longest = jnp.max(jnp.sum(grouped, axis=1))
    num_chunks = self.padded // self.width
    self.live = jnp.arange(num_chunks) * self.width < longest  # [n]

  def chunks(self, x: jax.Array | None, fill=0) -> jax.Array | None:
    """[A, ...] -> [n, G * s, ...]; padding anchors hold `fill`."""
    if x is None:
      return None
    rest = x.shape[1:]
    grouped = pad_to(x.reshape((self.groups, self.per_group) + rest), 1, self.padded, fill)
    index = self.order.reshape(self.order.shape + (1,) * len(rest))
    dealt = jnp.take_along_axis(grouped, index, axis=1)  # [G, P, ...]
    dealt = dealt.reshape((self.groups, -1, self.width) + rest)
    return jnp.swapaxes(dealt, 0, 1).reshape((-1, self.groups * self.width) + rest)

  def anchors(self, x: jax.Array) -> jax.Array:
    """The inverse of `chunks`: [n, G * s, ...] -> [A, ...]."""
    rest = x.shape[2:]
    grouped = jnp.swapaxes(x.reshape((-1, self.groups, self.width) + rest), 0, 1)
    grouped = grouped.reshape((self.groups, self.padded) + rest)
    inverse = jnp.argsort(self.order, axis=1).reshape((self.groups, self.padded) + (1,) * len(rest))
    restored = jnp.take_along_axis(grouped, inverse, axis=1)[:, : self.per_group]
    return restored.reshape((-1,) + rest)


def _logits(negatives, chunk):
  """One chunk's [c, Q, M] logits and whether each negative counts for its anchor.

  `negatives` is (vectors, log-Q, ids, 1 / temperature), shared by every chunk; `chunk` is the
  chunk's (queries, excluded ids, excluded mask).
  """
  vectors, log_q, items, inv_temperature = negatives
  queries, excluded, mask = chunk
  logits = jnp.einsum("cqd,md->cqm", queries, vectors) * inv_temperature - log_q
  hit = jnp.any(excluded[:, :, None] == items, axis=1)  # [c, M]
  if mask is not None:
    hit = hit | mask
  usable = (items > 0)[None, :] & ~hit
  return logits, usable[:, None, :]


def _forward(queries, vectors, log_q, items, excluded, mask, live, inv_temperature):
  negatives = (vectors, log_q, items, inv_temperature)

  def one(args):
    chunk, chunk_live = args[:3], args[3]

    def score():
      logits, usable = _logits(negatives, chunk)
      return jax.nn.logsumexp(jnp.where(usable, logits, -jnp.inf), axis=-1)

    skipped = jnp.full(chunk[0].shape[:2], -jnp.inf, chunk[0].dtype)
    return jax.lax.cond(chunk_live, score, lambda: skipped)

  return jax.lax.map(one, (queries, excluded, mask, live))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _chunked_lse(queries, vectors, log_q, items, excluded, mask, live, inv_temperature):
  return _forward(queries, vectors, log_q, items, excluded, mask, live, inv_temperature)


def _chunked_lse_fwd(queries, vectors, log_q, items, excluded, mask, live, inv_temperature):
  lse = _forward(queries, vectors, log_q, items, excluded, mask, live, inv_temperature)
  return lse, (queries, vectors, log_q, items, excluded, mask, live, lse)


def _chunked_lse_bwd(inv_temperature, residuals, cotangent):
  queries, vectors, log_q, items, excluded, mask, live, lse = residuals
  negatives = (vectors, log_q, items, inv_temperature)

  def visit(carry, args):
    chunk, (chunk_live, chunk_lse, chunk_cot) = args[:3], args[3:]
    chunk_queries = chunk[0]

    def gradients(carry):
      vectors_grad, log_q_grad = carry
      logits, usable = _logits(negatives, chunk)
      # d lse / d logit = softmax weight; rows without a usable negative (lse -inf) get none.
      usable = usable & jnp.isfinite(chunk_lse)[..., None]
      weights = jnp.where(usable, jnp.exp(logits - chunk_lse[..., None]), 0.0)
      weights = weights * chunk_cot[..., None]
      queries_grad = jnp.einsum("cqm,md->cqd", weights, vectors) * inv_temperature
      vectors_grad = (
        vectors_grad + jnp.einsum("cqm,cqd->md", weights, chunk_queries) * inv_temperature
      )
      return (vectors_grad, log_q_grad - weights.sum((0, 1))), queries_grad

    def skip(carry):
      return carry, jnp.zeros_like(chunk_queries)

    return jax.lax.cond(chunk_live, gradients, skip, carry)

  (vectors_grad, log_q_grad), queries_grad = jax.lax.scan(
    visit,
    (jnp.zeros_like(vectors), jnp.zeros_like(log_q)),
    (queries, excluded, mask, live, lse, cotangent),
  )
  # Ids, masks and the live flags take no gradient.
  return queries_grad, vectors_grad, log_q_grad, None, None, None, None


_chunked_lse.defvjp(_chunked_lse_fwd, _chunked_lse_bwd)


def chunked_negative_logsumexp(
  queries: jax.Array,
  negative_vectors: jax.Array,
  negative_log_q: jax.Array,
  negative_items: jax.Array,
  excluded_items: jax.Array,
  temperature: float,
  excluded_mask: jax.Array | None = None,
  *,
  chunk_anchors: int,
  active: jax.Array | None = None,
  groups: int = 1,
) -> jax.Array:
  """`reference_negative_logsumexp`, `chunk_anchors` anchors at a time (same arguments).

  Args:
    active: optional [A] bool, the anchors to score (all when None).
    groups: parts of the anchors sorted and dealt apart (the batch's shards), dividing A.

  Returns:
    [A, Q]; -inf where an anchor has no usable negative or is not `active` (its gradient
    is then 0).
  """
  if active is None:
    active = jnp.ones(queries.shape[0], bool)
  deal = _Deal(active, groups, chunk_anchors)
  lse = _chunked_lse(
    deal.chunks(queries),
    negative_vectors,
    negative_log_q.astype(queries.dtype),
    negative_items,
    deal.chunks(excluded_items, -1),
    deal.chunks(excluded_mask, False),
    deal.live,
    1.0 / temperature,
  )
  lse = deal.anchors(lse)
  return jnp.where(active[:, None], lse, -jnp.inf)
