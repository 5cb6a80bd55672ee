"""A dot-product scorer's catalogue blocks on the device: scores, counts and top-k, compiled.

`catalogue` ranks a `DotScorer`'s users here. The item vectors go to the device once, or, for
a catalogue too large to hold, an encoder's parameters do and each chunk's vectors are
computed from its ids inside the loop; one compiled call per chunk of users loops over the item
chunks, scoring each [user_chunk, item_chunk] block and reducing it at once, so only [users]
counts or [users, k] ids come back to the host. Users are padded to the chunk size and the
last item chunk ends at item N (its items of the chunk before masked), so each shape compiles
once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

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


# (source, [...] item ids) -> [..., S] their vectors; hashable: a static argument of the jit.
RowsOf = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class ItemEncoder:
  """Items' vectors computed from their ids, `rows(params, ids)`, for a catalogue too large
  to hold its vectors."""

  rows: RowsOf
  params: Any  # a pytree of arrays: traced, so new parameters reuse the compilation

  def __call__(self, items: np.ndarray) -> np.ndarray:
    """[...] item ids -> [..., S] float32 their vectors, on the host."""
    return np.asarray(_encode(self.rows, self.params, np.asarray(items, np.int32)), np.float32)


@functools.partial(jax.jit, static_argnames="rows")
def _encode(rows: RowsOf, params, items: jax.Array) -> jax.Array:
  return rows(params, items)


def _stored_rows(vectors: jax.Array, items: jax.Array) -> jax.Array:
  """`RowsOf` stored [N + 1, S] vectors."""
  return vectors[items]


@dataclasses.dataclass(frozen=True)
class DeviceItems:
  """Items 1..N scored in chunks of `chunk` (at most N), their vectors `rows(source, ids)`."""

  rows: RowsOf
  source: Any  # the [N + 1, S] float32 vectors on the device, or an encoder's parameters
  num_items: int
  chunk: int


def device_items(items: np.ndarray | ItemEncoder, num_items: int, item_chunk: int) -> DeviceItems:
  """Items 1..N of the [N + 1, S] vectors `items` (put on the device whole) or of an encoder
  (each chunk encoded where it is scored), scored `item_chunk` items at a time."""
  chunk = min(item_chunk, num_items)
  if isinstance(items, ItemEncoder):
    return DeviceItems(items.rows, items.params, num_items, chunk)
  vectors = jax.device_put(np.asarray(items[: num_items + 1], np.float32))
  return DeviceItems(_stored_rows, vectors, num_items, chunk)


def _block(rows: RowsOf, source, chunk, size: int, users: UserChunk, temperature, num_items: int):
  """(scores, ids, valid) of the item chunk `chunk` of `size` items: [users, size]
  query . vector / temperature plus each user's history bias on its items, [size] their ids,
  [size] false on the items of the chunk before (the last chunk ends at N)."""
  first = 1 + chunk * size
  start = jnp.minimum(first, num_items + 1 - size)
  ids = start + jnp.arange(size)
  scores = jnp.matmul(users.queries, rows(source, ids).T, precision=_EXACT) / temperature
  if users.history_items is not None:
    columns = users.history_items - start
    # Items outside the chunk (the padding item 0 included) go past its end: dropped.
    columns = jnp.where((columns >= 0) & (columns < size), columns, size)
    rows = jnp.arange(len(scores))[:, None]
    scores = scores.at[rows, columns].add(users.history_bias, mode="drop")
  return scores, ids, ids >= first


def _target_scores(rows: RowsOf, source, users: UserChunk, temperature, size: int) -> jax.Array:
  """[users] each user's score of its target, by the blocks' product and bias."""
  # Encoded `size` ids at a time, as in the blocks: an encoder's rounding depends on the shape.
  padded = jnp.pad(users.targets, (0, -len(users.targets) % size)).reshape(-1, size)
  vectors = lax.map(functools.partial(rows, source), padded)
  vectors = vectors.reshape(-1, vectors.shape[-1])[: len(users.targets)]
  products = jnp.matmul(users.queries, vectors.T, precision=_EXACT)
  scores = jnp.diagonal(products) / temperature
  if users.history_items is None:
    return scores
  owned = users.history_items == users.targets[:, None]
  return scores + jnp.sum(jnp.where(owned, users.history_bias, 0), axis=1)


@functools.partial(jax.jit, static_argnames=("rows", "num_items", "size"))
def _chunk_counts(rows: RowsOf, source, users: UserChunk, temperature, num_items: int, size: int):
  """([users, 3] candidates scored strictly above the target: all, seen, drawn; whether every
  score of items 1..N is finite)."""
  target_scores = _target_scores(rows, source, users, temperature, size)[:, None]

  def add_block(chunk, state):
    counts, finite = state
    scores, ids, valid = _block(rows, source, chunk, size, users, temperature, num_items)
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


@functools.partial(jax.jit, static_argnames=("rows", "num_items", "size", "k"))
def _chunk_top(
  rows: RowsOf, source, users: UserChunk, temperature, num_items: int, size: int, k: int
):
  """([users, k] the highest-scored ids, best first, ties to the lower id; whether every score
  of items 1..N is finite)."""
  count = len(users.queries)

  def merge_block(chunk, state):
    best_scores, best_ids, finite = state
    scores, ids, valid = _block(rows, source, chunk, size, users, temperature, num_items)
    finite &= jnp.all(jnp.isfinite(scores) | ~valid)
    block_scores, columns = lax.top_k(jnp.where(valid, scores, -jnp.inf), min(k, len(ids)))
    # Earlier columns win ties in top_k: the running best holds the lower ids.
    merged_scores = jnp.concatenate([best_scores, block_scores], axis=1)
    merged_ids = jnp.concatenate([best_ids, ids[columns]], axis=1)
    best_scores, positions = lax.top_k(merged_scores, k)
    return best_scores, jnp.take_along_axis(merged_ids, positions, axis=1), finite

  initial = (jnp.full((count, k), -jnp.inf), jnp.zeros((count, k), jnp.int32), jnp.bool_(True))
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
    items.rows, items.source, users, np.float32(temperature), items.num_items, items.chunk
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
    items.rows, items.source, users, np.float32(temperature), items.num_items, items.chunk, k
  )
  return _checked(best_ids, finite, rows)
