"""A dot-product scorer's catalogue blocks on the device: scores, counts and top-k, compiled.

`catalogue` ranks a `DotScorer`'s users here. The item vectors go to the device once; one
compiled call per chunk of users loops over the item chunks, scoring each
[user_chunk, item_chunk] block and reducing it at once, so only [users] counts or [users, k]
ids come back to the host. Users are padded to the chunk size and the last item chunk ends at
item N (its items of the chunk before masked), so each shape compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NOT_FINITE = "retrieval scores contain NaN or inf"
# Float32 products on every platform (not TF32 or bf16 passes): the ranks are compared exactly.
_EXACT = lax.Precision.HIGHEST


class UserChunk(NamedTuple):
  """One chunk of users, padded to its size; zero item ids are padding."""

  queries: np.ndarray  # [users, S]
  history_items: np.ndarray | None  # [users, H] items whose score gains the bias
  history_bias: np.ndarray | None  # [users, H]
  targets: np.ndarray  # [users] ids in 1..N (ranks only)
  seen: np.ndarray  # [users, L] distinct removed items, never the target (ranks only)
  drawn: np.ndarray  # [users, M] sampled negatives, or [users, 0] (ranks only)


@dataclasses.dataclass(frozen=True)
class DeviceItems:
  """Items 1..N scored in chunks of `chunk` (at most N)."""

  vectors: jax.Array  # [N + 1, S] float32 on the device, row 0 the padding item
  num_items: int
  chunk: int


def device_items(item_vectors: np.ndarray, num_items: int, item_chunk: int) -> DeviceItems:
  """The [N + 1, S] `item_vectors` on the device, scored `item_chunk` items at a time."""
  vectors = jax.device_put(np.asarray(item_vectors[: num_items + 1], np.float32))
  return DeviceItems(vectors, num_items, min(item_chunk, num_items))


def _block(vectors: jax.Array, chunk, size: int, users: UserChunk, temperature, num_items: int):
  """(scores, ids, valid) of the item chunk `chunk` of `size` items: [users, size]
  query . vector / temperature plus each user's history bias on its items, [size] their ids,
  [size] false on the items of the chunk before (the last chunk ends at N)."""
  first = 1 + chunk * size
  start = jnp.minimum(first, num_items + 1 - size)
  ids = start + jnp.arange(size)
  scores = (
    jnp.matmul(users.queries, lax.dynamic_slice_in_dim(vectors, start, size).T, precision=_EXACT)
    / temperature
  )
  if users.history_items is not None:
    columns = users.history_items - start
    # Items outside the chunk (the padding item 0 included) go past its end: dropped.
    columns = jnp.where((columns >= 0) & (columns < size), columns, size)
    rows = jnp.arange(len(scores))[:, None]
    scores = scores.at[rows, columns].add(users.history_bias, mode="drop")
  return scores, ids, ids >= first


def _target_scores(vectors: jax.Array, users: UserChunk, temperature) -> jax.Array:
  """[users] each user's score of its target, by the blocks' product and bias."""
  products = jnp.matmul(users.queries, vectors[users.targets].T, precision=_EXACT)
  scores = jnp.diagonal(products) / temperature
  if users.history_items is None:
    return scores
  owned = users.history_items == users.targets[:, None]
  return scores + jnp.sum(jnp.where(owned, users.history_bias, 0), axis=1)


@functools.partial(jax.jit, static_argnames=("num_items", "size"))
def _chunk_counts(vectors: jax.Array, users: UserChunk, temperature, num_items: int, size: int):
  """([users, 3] candidates scored strictly above the target: all, seen, drawn; whether every
  score of items 1..N is finite)."""
  target_scores = _target_scores(vectors, users, temperature)[:, None]

  def add_block(chunk, state):
    counts, finite = state
    scores, ids, valid = _block(vectors, chunk, size, users, temperature, num_items)
    finite &= jnp.all(jnp.isfinite(scores) | ~valid)
    higher = (scores > target_scores) & valid & (ids != users.targets[:, None])

    def among(items):  # how many of each row's `items` in this chunk are higher
      columns = items - ids[0]
      inside = (columns >= 0) & (columns < len(ids))
      picked = jnp.take_along_axis(higher, jnp.clip(columns, 0, len(ids) - 1), axis=1)
      return jnp.sum(picked & inside, axis=1)

    block = jnp.stack([jnp.sum(higher, axis=1), among(users.seen), among(users.drawn)], axis=1)
    return counts + block, finite

  initial = (jnp.zeros((len(users.queries), 3), jnp.int32), jnp.bool_(True))
  return lax.fori_loop(0, -(-num_items // size), add_block, initial)


@functools.partial(jax.jit, static_argnames=("num_items", "size", "k"))
def _chunk_top(
  vectors: jax.Array, users: UserChunk, temperature, num_items: int, size: int, k: int
):
  """([users, k] the highest-scored ids, best first, ties to the lower id; whether every score
  of items 1..N is finite)."""
  rows = len(users.queries)

  def merge_block(chunk, state):
    best_scores, best_ids, finite = state
    scores, ids, valid = _block(vectors, chunk, size, users, temperature, num_items)
    finite &= jnp.all(jnp.isfinite(scores) | ~valid)
    block_scores, columns = lax.top_k(jnp.where(valid, scores, -jnp.inf), min(k, len(ids)))
    # Earlier columns win ties in top_k: the running best holds the lower ids.
    merged_scores = jnp.concatenate([best_scores, block_scores], axis=1)
    merged_ids = jnp.concatenate([best_ids, ids[columns]], axis=1)
    best_scores, positions = lax.top_k(merged_scores, k)
    return best_scores, jnp.take_along_axis(merged_ids, positions, axis=1), finite

  initial = (jnp.full((rows, k), -jnp.inf), jnp.zeros((rows, k), jnp.int32), jnp.bool_(True))
  _, best_ids, finite = lax.fori_loop(0, -(-num_items // size), merge_block, initial)
  return best_ids, finite


def _checked(values: jax.Array, finite: jax.Array, rows: int) -> np.ndarray:
  """`values`' first `rows` as int64 on the host; non-finite scores fail."""
  if not bool(finite):
    raise ValueError(NOT_FINITE)
  return np.asarray(values, np.int64)[:rows]


def chunk_counts(items: DeviceItems, temperature: float, users: UserChunk, rows: int) -> np.ndarray:
  """[rows, 3] int64 of the first `rows` users: candidates among items 1..N scored strictly
  above the target (never the target itself), those of them seen, those drawn.

  Raises:
    ValueError: if any score of an item 1..N is not finite.
  """
  counts, finite = _chunk_counts(
    items.vectors, users, np.float32(temperature), items.num_items, items.chunk
  )
  return _checked(counts, finite, rows)


def chunk_top(
  items: DeviceItems, temperature: float, users: UserChunk, rows: int, k: int
) -> np.ndarray:
  """[rows, k] int64 the first `rows` users' highest-scored items 1..N, best first, ties to
  the lower id (k at most N).

  Raises:
    ValueError: if any score of an item 1..N is not finite.
  """
  best_ids, finite = _chunk_top(
    items.vectors, users, np.float32(temperature), items.num_items, items.chunk, k
  )
  return _checked(best_ids, finite, rows)
