"""The sampled softmax's negative log-sum-exp, tiled in Pallas, with its pure-JAX reference.

The retrieval loss (`unipinrec.losses.sampled_softmax_loss`) scores every
query (anchor x condition) against M shared sampled negatives, subtracts each
negative's log-Q, drops negatives that are one of the anchor's own positives
(or padding), and takes the log-sum-exp. With 10^5 queries and 8192 negatives
the [rows, M] logits are gigabytes; the kernel computes them one
[rows tile, negatives tile] block at a time in on-chip memory, keeping a
running max and sum per row, and writes only the [rows] log-sum-exp.

The backward pass (custom VJP) recomputes each block's logits from the saved
log-sum-exp, p = exp(logit - lse): one kernel accumulates the queries'
gradient over the negative tiles, another the negatives' gradient (and
log-Q's) over row tiles, split into chunks whose partial sums XLA adds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import default_interpret
from kernels.tiling import MIN_BLOCK, block, pad_to

# Tiles of query rows and of negatives; Triton's dot needs >= 16.
BLOCK_ROWS = 64
BLOCK_NEGATIVES = 64
# Row chunks of the negatives' gradient: programs that run in parallel, summed after.
_ROW_SPLITS = 16


def reference_negative_logsumexp(
  queries: jax.Array,
  negative_vectors: jax.Array,
  negative_log_q: jax.Array,
  negative_items: jax.Array,
  excluded_items: jax.Array,
  temperature: float,
  excluded_mask: jax.Array | None = None,
) -> jax.Array:
  """Log-sum-exp of each query's logits over its usable negatives, in plain JAX.

  Args:
    queries: [A, Q, D] unit queries (A anchors, Q conditions each).
    negative_vectors: [M, D] the sampled negatives' unit vectors.
    negative_log_q: [M] subtracted from each negative's logit (log-Q correction).
    negative_items: [M] their item ids; 0 marks an unusable sample.
    excluded_items: [A, W] ids that are no negative of the anchor (its positives);
      -1 excludes nothing.
    temperature: logits are cosine / temperature.
    excluded_mask: optional [A, M], True where a negative is none of that anchor's
      (the items it has already acted on; the Pallas kernel has no such input).

  Returns:
    [A, Q]; -inf where an anchor has no usable negative.
  """
  logits = jnp.einsum("aqd,md->aqm", queries, negative_vectors) / temperature - negative_log_q
  hit = jnp.any(excluded_items[:, :, None] == negative_items, axis=1)  # [A, M]
  if excluded_mask is not None:
    hit = hit | excluded_mask
  usable = (negative_items > 0)[None, :] & ~hit
  return jax.nn.logsumexp(jnp.where(usable[:, None, :], logits, -jnp.inf), axis=-1)


def _block_logits(queries, vectors_ref, log_q_ref, items_ref, excluded, start, block):
  """[br, bm] logits of a row tile against negatives start:start+block; -inf where unusable."""
  tile = pl.ds(start, block)
  items = items_ref[tile]
  logits = jnp.dot(queries, vectors_ref[tile, :].T, preferred_element_type=jnp.float32)
  logits = logits - log_q_ref[tile][None, :]
  usable = jnp.broadcast_to(items[None, :] > 0, logits.shape)
  for row_excluded in excluded:
    usable = usable & (row_excluded[:, None] != items[None, :])
  return logits, usable


def _lse_kernel(
  queries_ref, excluded_ref, vectors_ref, log_q_ref, items_ref, lse_ref, *, block, inv_temperature
):
  """One row tile: refs [br, D], [W, br], [M, D], [M], [M] -> lse [br]."""
  queries = queries_ref[...].astype(jnp.float32) * inv_temperature
  excluded = [excluded_ref[w, :] for w in range(excluded_ref.shape[0])]

  def visit_tile(tile, carry):
    running_max, running_sum = carry
    logits, usable = _block_logits(
      queries, vectors_ref, log_q_ref, items_ref, excluded, tile * block, block
    )
    logits = jnp.where(usable, logits, -jnp.inf)
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=1))
    # A row with nothing usable yet keeps max -inf; shift by 0 there instead of by -inf (NaN).
    shift = jnp.where(new_max == -jnp.inf, 0.0, new_max)
    running_sum = running_sum * jnp.exp(running_max - shift) + jnp.sum(
      jnp.exp(logits - shift[:, None]), axis=1
    )
    return new_max, running_sum

  rows = queries.shape[0]
  init = (jnp.full((rows,), -jnp.inf, jnp.float32), jnp.zeros((rows,), jnp.float32))
  running_max, running_sum = lax.fori_loop(0, items_ref.shape[0] // block, visit_tile, init)
  lse_ref[...] = running_max + jnp.log(running_sum)  # -inf + log 0 = -inf: nothing usable


def _probabilities(logits, usable, lse, row_cotangent):
  """g * softmax weight of each block entry, 0 where unusable (and for rows with lse -inf)."""
  return jnp.where(usable, jnp.exp(logits - lse[:, None]), 0.0) * row_cotangent[:, None]


def _query_grad_kernel(
  queries_ref,
  excluded_ref,
  lse_ref,
  cotangent_ref,
  vectors_ref,
  log_q_ref,
  items_ref,
  grad_ref,
  *,
  block,
  inv_temperature,
):
  """One row tile: d lse / d queries = sum_m g p_m v_m / T over every negative tile."""
  queries = queries_ref[...].astype(jnp.float32) * inv_temperature
  excluded = [excluded_ref[w, :] for w in range(excluded_ref.shape[0])]
  lse, cotangent = lse_ref[...], cotangent_ref[...]

  def visit_tile(tile, grad):
    start = tile * block
    logits, usable = _block_logits(
      queries, vectors_ref, log_q_ref, items_ref, excluded, start, block
    )
    weights = _probabilities(logits, usable, lse, cotangent)
    vectors = vectors_ref[pl.ds(start, block), :].astype(jnp.float32)
    return grad + jnp.dot(weights, vectors, preferred_element_type=jnp.float32)

  grad = jnp.zeros(queries.shape, jnp.float32)
  grad = lax.fori_loop(0, items_ref.shape[0] // block, visit_tile, grad)
  grad_ref[...] = (grad * inv_temperature).astype(grad_ref.dtype)


def _negative_grad_kernel(
  vectors_ref,
  log_q_ref,
  items_ref,
  queries_ref,
  excluded_ref,
  lse_ref,
  cotangent_ref,
  vectors_grad_ref,
  log_q_grad_ref,
  *,
  block_rows,
  inv_temperature,
):
  """One (negative tile, row chunk): sums over its row tiles of g p q / T and of -g p."""
  num_negatives = vectors_ref.shape[0]
  vectors = vectors_ref[...].astype(jnp.float32)
  log_q, items = log_q_ref[...], items_ref[...]

  def visit_tile(tile, carry):
    vectors_grad, log_q_grad = carry
    rows = pl.ds(tile * block_rows, block_rows)
    queries = queries_ref[rows, :].astype(jnp.float32) * inv_temperature
    logits = jnp.dot(queries, vectors.T, preferred_element_type=jnp.float32) - log_q[None, :]
    usable = jnp.broadcast_to(items[None, :] > 0, logits.shape)
    for w in range(excluded_ref.shape[0]):
      usable = usable & (excluded_ref[w, rows][:, None] != items[None, :])
    weights = _probabilities(logits, usable, lse_ref[rows], cotangent_ref[rows])
    vectors_grad = vectors_grad + jnp.dot(weights.T, queries, preferred_element_type=jnp.float32)
    return vectors_grad, log_q_grad - jnp.sum(weights, axis=0)

  init = (jnp.zeros(vectors.shape, jnp.float32), jnp.zeros((num_negatives,), jnp.float32))
  num_tiles = queries_ref.shape[0] // block_rows
  vectors_grad, log_q_grad = lax.fori_loop(0, num_tiles, visit_tile, init)
  vectors_grad_ref[...] = vectors_grad  # the queries were already scaled by 1 / T
  log_q_grad_ref[...] = log_q_grad


def _lse(queries, vectors, log_q, items, excluded, inv_temperature, br, bm, interp):
  """Padded operands -> lse [R]: queries [R, D], vectors [M, D], [M] x 2, excluded [W, R]."""
  rows, dim = queries.shape
  return pl.pallas_call(
    functools.partial(_lse_kernel, block=bm, inv_temperature=inv_temperature),
    grid=(rows // br,),
    in_specs=[
      pl.BlockSpec((br, dim), lambda i: (i, 0)),
      pl.BlockSpec((excluded.shape[0], br), lambda i: (0, i)),
      pl.BlockSpec(vectors.shape, lambda i: (0, 0)),
      pl.BlockSpec(log_q.shape, lambda i: (0,)),
      pl.BlockSpec(items.shape, lambda i: (0,)),
    ],
    out_specs=pl.BlockSpec((br,), lambda i: (i,)),
    out_shape=jax.ShapeDtypeStruct((rows,), jnp.float32),
    interpret=interp,
    name="sampled_softmax_lse",
  )(queries, excluded, vectors, log_q, items)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _tiled_lse(queries, vectors, log_q, items, excluded, inv_temperature, br, bm, interp):
  return _lse(queries, vectors, log_q, items, excluded, inv_temperature, br, bm, interp)


def _tiled_lse_fwd(queries, vectors, log_q, items, excluded, inv_temperature, br, bm, interp):
  lse = _lse(queries, vectors, log_q, items, excluded, inv_temperature, br, bm, interp)
  return lse, (queries, vectors, log_q, items, excluded, lse)


def _tiled_lse_bwd(inv_temperature, br, bm, interp, residuals, cotangent):
  queries, vectors, log_q, items, excluded, lse = residuals
  (rows, dim), num_negatives, width = queries.shape, vectors.shape[0], excluded.shape[0]
  negatives_operands = [
    pl.BlockSpec(vectors.shape, lambda i: (0, 0)),
    pl.BlockSpec(log_q.shape, lambda i: (0,)),
    pl.BlockSpec(items.shape, lambda i: (0,)),
  ]
  queries_grad = pl.pallas_call(
    functools.partial(_query_grad_kernel, block=bm, inv_temperature=inv_temperature),
    grid=(rows // br,),
    in_specs=[
      pl.BlockSpec((br, dim), lambda i: (i, 0)),
      pl.BlockSpec((width, br), lambda i: (0, i)),
      pl.BlockSpec((br,), lambda i: (i,)),
      pl.BlockSpec((br,), lambda i: (i,)),
      *negatives_operands,
    ],
    out_specs=pl.BlockSpec((br, dim), lambda i: (i, 0)),
    out_shape=jax.ShapeDtypeStruct(queries.shape, queries.dtype),
    interpret=interp,
    name="sampled_softmax_query_grad",
  )(queries, excluded, lse, cotangent, vectors, log_q, items)

  splits = min(_ROW_SPLITS, rows // br)  # `rows` is a multiple of br * splits (see the caller)
  chunk = rows // splits
  vectors_grad, log_q_grad = pl.pallas_call(
    functools.partial(_negative_grad_kernel, block_rows=br, inv_temperature=inv_temperature),
    grid=(num_negatives // bm, splits),
    in_specs=[
      pl.BlockSpec((bm, dim), lambda i, s: (i, 0)),
      pl.BlockSpec((bm,), lambda i, s: (i,)),
      pl.BlockSpec((bm,), lambda i, s: (i,)),
      pl.BlockSpec((chunk, dim), lambda i, s: (s, 0)),
      pl.BlockSpec((width, chunk), lambda i, s: (0, s)),
      pl.BlockSpec((chunk,), lambda i, s: (s,)),
      pl.BlockSpec((chunk,), lambda i, s: (s,)),
    ],
    out_specs=[
      pl.BlockSpec((None, bm, dim), lambda i, s: (s, i, 0)),
      pl.BlockSpec((None, bm), lambda i, s: (s, i)),
    ],
    out_shape=[
      jax.ShapeDtypeStruct((splits, num_negatives, dim), jnp.float32),
      jax.ShapeDtypeStruct((splits, num_negatives), jnp.float32),
    ],
    interpret=interp,
    name="sampled_softmax_negative_grad",
  )(vectors, log_q, items, queries, excluded, lse, cotangent)
  return (
    queries_grad,
    vectors_grad.sum(0).astype(vectors.dtype),
    log_q_grad.sum(0).astype(log_q.dtype),
    None,
    None,
  )


_tiled_lse.defvjp(_tiled_lse_fwd, _tiled_lse_bwd)


def negative_logsumexp(
  queries: jax.Array,
  negative_vectors: jax.Array,
  negative_log_q: jax.Array,
  negative_items: jax.Array,
  excluded_items: jax.Array,
  temperature: float,
  *,
  block_rows: int = BLOCK_ROWS,
  block_negatives: int = BLOCK_NEGATIVES,
  interpret: bool | None = None,
) -> jax.Array:
  """`reference_negative_logsumexp` computed tile by tile in Pallas (same arguments).

  Args:
    block_rows, block_negatives: tile sizes (powers of 2, at least 16).
    interpret: Pallas interpret mode; by default on wherever the backend is not a GPU.
    (others as `reference_negative_logsumexp`.)

  Returns:
    [A, Q]; -inf where an anchor has no usable negative (its gradient is then 0).
  """
  interp = default_interpret() if interpret is None else interpret
  anchors, conditions, dim = queries.shape
  num_negatives, rows = negative_items.shape[0], anchors * conditions
  br = block(block_rows, rows)
  bm = block(block_negatives, num_negatives)
  splits = max(1, min(_ROW_SPLITS, pl.cdiv(rows, br)))
  padded_rows = pl.cdiv(rows, br * splits) * br * splits
  padded_m = pl.cdiv(num_negatives, bm) * bm
  padded_d = max(MIN_BLOCK, pl.next_power_of_2(dim))
  width = pl.next_power_of_2(excluded_items.shape[1])

  # Padded rows are zero queries that nothing reads; padded negatives have item 0 (unusable).
  flat_queries = pad_to(pad_to(queries.reshape(rows, dim), 0, padded_rows), 1, padded_d)
  vectors = pad_to(pad_to(negative_vectors, 0, padded_m), 1, padded_d)
  log_q = pad_to(negative_log_q.astype(jnp.float32), 0, padded_m)
  items = pad_to(negative_items.astype(jnp.int32), 0, padded_m)
  # [W, rows]: each row of the kernel's tile reads its anchor's excluded ids as one vector per w.
  excluded = jnp.repeat(excluded_items.astype(jnp.int32), conditions, axis=0)
  excluded = pad_to(pad_to(excluded, 1, width, -1), 0, padded_rows, -1).T
  lse = _tiled_lse(flat_queries, vectors, log_q, items, excluded, 1.0 / temperature, br, bm, interp)
  return lse[:rows].reshape(anchors, conditions)
