"""Candidate attention on the user KV cache in Pallas, block-sparse in the history.

Each candidate attends to the first `prefix` positions of its user's cached
keys/values and to its own key/value, never to other candidates (the
reference is `kernels.attention.candidate_attention`). One program
handles a tile of candidates of one (user, head): it starts the online
softmax from the candidate's own key, then walks history tiles only up to the
tile's largest prefix, so tiles past every candidate's prefix are never read
(ragged histories cost what they hold, not the padded length). The optional
learned recency bias (a per-head table over buckets of the query-key distance)
is looked up inside the kernel, so no [B, H, C, L] bias is ever materialised.

The causal history attention of training is the same mask: position t sees
the history prefix min(t, length) and itself, so `causal_attention` runs this
kernel with the history as its own candidates, and the tiles above the
diagonal are skipped the same way. Training's blended pass (causal history,
then slates on their request prefix) thus runs block-sparse end to end in the
forward pass.

Gradients: a custom VJP whose backward is the reference's VJP recomputed one
tile of candidates at a time (a `lax.scan`), so its memory is a tile's
[B, H, tile, L] weights rather than all candidates'; it is dense in the
history (not block-sparse) and runs in XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import attention, default_interpret
from kernels.tiling import MIN_BLOCK, block, pad_to

# Tiles of candidates (queries) and of history positions (keys); Triton's dot needs >= 16.
BLOCK_CANDIDATES = 64
BLOCK_HISTORY = 64


def _bias_lookup(bias_ref, distance, num_buckets, max_distance):
  """[bc, bl] distances -> this head's learned logit biases, by an unrolled select per bucket
  (a gather from the table is not something every Pallas backend lowers)."""
  buckets = attention.relative_buckets(distance, num_buckets, max_distance)
  bias = jnp.zeros(buckets.shape, jnp.float32)
  for bucket in range(num_buckets):
    bias = jnp.where(buckets == bucket, bias_ref[bucket], bias)
  return bias


def _forward_kernel(
  prefix_ref,
  q_ref,
  k_ref,
  v_ref,
  history_keys_ref,
  history_values_ref,
  *refs,
  block_history,
  num_buckets,
  max_distance,
):
  """One (user, head, candidate tile): refs [bc], [bc, Dh] x 3, [L, Dh] x 2, and this head's
  [buckets] bias table if `num_buckets` -> [bc, Dh]."""
  bias_ref, out_ref = refs if num_buckets else (None, *refs)
  # Dots in the inputs' dtype (bf16 on the matrix units), accumulated and softmaxed in float32.
  q = q_ref[...]  # already scaled by 1 / sqrt(Dh)
  prefix = prefix_ref[...]
  # The own key is always visible, so the running max starts finite and no row is ever empty.
  running_max = jnp.sum(q.astype(jnp.float32) * k_ref[...].astype(jnp.float32), axis=1)  # [bc]
  if num_buckets:
    running_max = running_max + bias_ref[0]  # the own key is at distance 0: bucket 0
  running_sum = jnp.ones_like(running_max)
  acc = v_ref[...].astype(jnp.float32)

  def visit_tile(tile, carry):
    acc, running_max, running_sum = carry
    start = tile * block_history
    keys = history_keys_ref[pl.ds(start, block_history), :]
    logits = jnp.dot(q, keys.T, preferred_element_type=jnp.float32)
    # A candidate sits `prefix` positions after the first: history position j is prefix - j back.
    distance = prefix[:, None] - (start + jnp.arange(block_history))[None, :]
    if num_buckets:
      logits = logits + _bias_lookup(bias_ref, distance, num_buckets, max_distance)
    logits = jnp.where(distance > 0, logits, -jnp.inf)
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=1))
    correction = jnp.exp(running_max - new_max)
    weights = jnp.exp(logits - new_max[:, None])  # 0 where masked
    values = history_values_ref[pl.ds(start, block_history), :]
    update = jnp.dot(weights.astype(values.dtype), values, preferred_element_type=jnp.float32)
    acc = acc * correction[:, None] + update
    return acc, new_max, running_sum * correction + jnp.sum(weights, axis=1)

  # Block sparsity: tiles at or past the largest prefix in this candidate tile are skipped.
  num_tiles = lax.div(jnp.max(prefix) + (block_history - 1), block_history)
  acc, _, running_sum = lax.fori_loop(0, num_tiles, visit_tile, (acc, running_max, running_sum))
  out_ref[...] = (acc / running_sum[:, None]).astype(out_ref.dtype)


def _forward(
  q,
  k,
  v,
  history_keys,
  history_values,
  prefix,
  relative_bias,
  block_candidates,
  block_history,
  interp,
  max_distance,
):
  """Pads to whole tiles (and Dh, buckets to powers of 2 >= 16), runs the kernel, slices back."""
  batch, num_candidates, num_heads, head_dim = q.shape
  history_length = history_keys.shape[1]
  bc = block(block_candidates, num_candidates)
  bl = block(block_history, history_length)
  padded_c = pl.cdiv(num_candidates, bc) * bc
  padded_l = pl.cdiv(history_length, bl) * bl
  padded_d = max(MIN_BLOCK, pl.next_power_of_2(head_dim))

  def pad(x, length):
    return pad_to(pad_to(x, 1, length), 3, padded_d)

  # Zero-padded head dims change no dot product; padded candidates see nothing but themselves.
  q = pad(q / jnp.sqrt(head_dim).astype(q.dtype), padded_c)
  k, v = pad(k, padded_c), pad(v, padded_c)
  history_keys, history_values = pad(history_keys, padded_l), pad(history_values, padded_l)
  prefix = pad_to(jnp.clip(prefix, 0, history_length).astype(jnp.int32), 1, padded_c)

  candidate_spec = pl.BlockSpec((None, bc, None, padded_d), lambda b, h, i: (b, i, h, 0))
  history_spec = pl.BlockSpec((None, padded_l, None, padded_d), lambda b, h, i: (b, 0, h, 0))
  in_specs = [pl.BlockSpec((None, bc), lambda b, h, i: (b, i))] + [candidate_spec] * 3
  in_specs += [history_spec] * 2
  inputs = [prefix, q, k, v, history_keys, history_values]
  num_buckets = 0 if relative_bias is None else relative_bias.shape[1]
  if num_buckets:
    padded_buckets = max(MIN_BLOCK, pl.next_power_of_2(num_buckets))
    table = pad_to(relative_bias.astype(jnp.float32), 1, padded_buckets)
    in_specs.append(pl.BlockSpec((None, table.shape[1]), lambda b, h, i: (h, 0)))
    inputs.append(table)
  kernel = functools.partial(
    _forward_kernel, block_history=bl, num_buckets=num_buckets, max_distance=max_distance
  )
  out = pl.pallas_call(
    kernel,
    grid=(batch, num_heads, padded_c // bc),
    in_specs=in_specs,
    out_specs=candidate_spec,
    out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
    interpret=interp,
    name="candidate_attention",
  )(*inputs)
  return out[:, :num_candidates, :, :head_dim]


def _tiled_reference_vjp(residuals, cotangent, tile, max_distance):
  """The reference's VJP, one tile of candidates at a time; gradients of what all candidates
  share (the history's keys and values, the bias table) are summed over the tiles."""
  q, k, v, history_keys, history_values, prefix, relative_bias = residuals
  shared = (history_keys, history_values, relative_bias)  # a None table: a pytree without leaves
  batch, num_candidates = q.shape[:2]
  padded_c = pl.cdiv(num_candidates, tile) * tile

  def tiles(x):  # [B, C, ...] -> [C / tile, B, tile, ...]
    x = pad_to(x, 1, padded_c)
    return jnp.moveaxis(x.reshape((batch, padded_c // tile, tile) + x.shape[2:]), 1, 0)

  def one_tile(shared_grads, xs):
    q_t, k_t, v_t, prefix_t, cotangent_t = xs

    def reference(q_t, k_t, v_t, shared):
      keys, values, table = shared
      return attention.candidate_attention(
        q_t, k_t, v_t, keys, values, prefix_t, table, max_distance
      )

    _, vjp = jax.vjp(reference, q_t, k_t, v_t, shared)
    dq, dk, dv, d_shared = vjp(cotangent_t)
    return jax.tree.map(jnp.add, shared_grads, d_shared), (dq, dk, dv)

  # Padded candidates carry a zero cotangent, so they add nothing to the shared gradients.
  (d_keys, d_values, d_table), candidate_grads = lax.scan(
    one_tile,
    jax.tree.map(jnp.zeros_like, shared),
    tuple(tiles(x) for x in (q, k, v, prefix, cotangent)),
  )

  def untile(x):
    return jnp.moveaxis(x, 0, 1).reshape((batch, padded_c) + x.shape[3:])[:, :num_candidates]

  dq, dk, dv = (untile(g) for g in candidate_grads)
  return dq, dk, dv, d_keys, d_values, None, d_table


# Arguments: q, k, v, history_keys, history_values, prefix, relative_bias (differentiated,
# the table may be None), then the static bc, bl, interp, max_distance.
@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def _candidate_attention(*args):
  return _forward(*args)


def _candidate_attention_fwd(*args):
  return _forward(*args), args[:7]


def _candidate_attention_bwd(bc, bl, interp, max_distance, residuals, cotangent):
  del bl, interp
  return _tiled_reference_vjp(residuals, cotangent, max(bc, 128), max_distance)


_candidate_attention.defvjp(_candidate_attention_fwd, _candidate_attention_bwd)


def candidate_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  history_keys: jax.Array,
  history_values: jax.Array,
  prefix: jax.Array,
  relative_bias: jax.Array | None = None,
  max_distance: int = 0,
  *,
  block_candidates: int = BLOCK_CANDIDATES,
  block_history: int = BLOCK_HISTORY,
  interpret: bool | None = None,
) -> jax.Array:
  """Each candidate attends to its history prefix and to itself only (Pallas).

  Args:
    q, k, v: [B, C, H, Dh] the candidates' own projections.
    history_keys, history_values: [B, L, H, Dh] one layer of the user KV cache.
    prefix: [B, C] history positions visible to each candidate (0: only itself).
    relative_bias: [H, buckets] logit bias on the query-key distance (none if omitted), as
      the reference's: history position j is `prefix - j` back, the own key at distance 0.
    max_distance: where the last, logarithmic bucket ends (`attention.relative_buckets`).
    block_candidates, block_history: tile sizes (powers of 2, at least 16).
    interpret: Pallas interpret mode; by default on wherever the backend is not a GPU.

  Returns:
    [B, C, H, Dh], equal to `kernels.attention.candidate_attention`.
  """
  interp = default_interpret() if interpret is None else interpret
  tensors = (q, k, v, history_keys, history_values, prefix, relative_bias)
  return _candidate_attention(*tensors, block_candidates, block_history, interp, max_distance)


def causal_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  lengths: jax.Array,
  relative_bias: jax.Array | None = None,
  max_distance: int = 0,
  **kwargs,
) -> jax.Array:
  """Causal attention over right-padded histories, as candidate attention on itself.

  Position t sees the history prefix min(t, length) and its own key, which is
  the causal mask on every valid row. Rows at or past `lengths` are finite
  but, as in the reference `kernels.attention.causal_attention`,
  meaningless (they differ from the reference's). On valid rows the prefix is
  the query's position, so the recency bias sees the reference's distances.
  Keyword arguments are `candidate_attention`'s.

  Args:
    q, k, v: [B, L, H, Dh].
    lengths: [B] valid positions.
    relative_bias, max_distance: the recency bias, as in `candidate_attention`.
  """
  positions = jnp.arange(q.shape[1])
  prefix = jnp.minimum(positions[None, :], lengths[:, None])
  return candidate_attention(q, k, v, k, v, prefix, relative_bias, max_distance, **kwargs)
