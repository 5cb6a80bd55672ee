"""A dot-product scorer's catalogue blocks on the device: scores, counts and top-k, compiled.

`catalogue` ranks a `DotScorer`'s users here. The item vectors go to the device once, as
[chunks, item_chunk, S] (the last chunk padded with zero vectors, masked as items past N);
one compiled call per chunk of users loops over the item chunks, scoring each
[user_chunk, item_chunk] block and reducing it at once, so only [users] counts or [users, k]
ids come back to the host. Users are padded to the chunk size so each shape compiles once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NOT_FINITE = "retrieval scores contain NaN or inf"


class UserChunk(NamedTuple):
  """One chunk of users, padded to its size; zero item ids are padding."""

  queries: np.ndarray  # [users, S]
  history_items: np.ndarray | None  # [users, H] items whose score gains the bias
  history_bias: np.ndarray | None  # [users, H]
  targets: np.ndarray  # [users] ids in 1..N (ranks only)
  seen: np.ndarray  # [users, L] distinct removed items, never the target (ranks only)
  drawn: np.ndarray  # [users, M] sampled negatives, or [users, 0] (ranks only)


def item_chunks(item_vectors: np.ndarray, num_items: int, item_chunk: int) -> jax.Array:
  """[chunks, item_chunk, S] on the device: the vectors of items 1..N, zeros past N."""
  size = min(item_chunk, num_items)
  chunks = -(-num_items // size)
  vectors = np.asarray(item_vectors[1 : num_items + 1], np.float32)
  padded = np.pad(vectors, ((0, chunks * size - num_items), (0, 0)))
  return jax.device_put(padded.reshape(chunks, size, -1))


def _block(chunks: jax.Array, chunk, users: UserChunk, temperature, num_items):
  """(scores, ids, valid) of the item chunk `chunk`: [users, I] query . vector / temperature
  plus each user's history bias on its items, [I] their ids, [I] false past N."""
  vectors = chunks[chunk]
  first = 1 + chunk * vectors.shape[0]
  ids = first + jnp.arange(vectors.shape[0])
  scores = jnp.matmul(users.queries, vectors.T, precision=lax.Precision.HIGHEST) / temperature
  if users.history_items is not None:
    columns = users.history_items - first
    # Items outside the chunk (the padding item 0 included) go past its end: dropped.
    columns = jnp.where((columns >= 0) & (columns < len(ids)), columns, len(ids))
    rows = jnp.arange(len(scores))[:, None]
    scores = scores.at[rows, columns].add(users.history_bias, mode="drop")
  return scores, ids, ids <= num_items


def _target_scores(chunks: jax.Array, users: UserChunk, temperature) -> jax.Array:
  """[users] each user's score of its target, by the blocks' product and bias."""
  vectors = chunks.reshape(-1, chunks.shape[-1])[users.targets - 1]
  products = jnp.matmul(users.queries, vectors.T, precision=lax.Precision.HIGHEST)
  scores = jnp.diagonal(products) / temperature
  if users.history_items is None:
    return scores
  owned = users.history_items == users.targets[:, None]
  return scores + jnp.sum(jnp.where(owned, users.history_bias, 0), axis=1)


@jax.jit
def _chunk_counts(chunks: jax.Array, users: UserChunk, temperature, num_items):
  """([3, users] candidates scored strictly above the target: all, seen, drawn; whether every
  score of items 1..N is finite)."""
  target_scores = _target_scores(chunks, users, temperature)[:, None]

  def add_block(chunk, state):
    counts, finite = state
    scores, ids, valid = _block(chunks, chunk, users, temperature, num_items)
    finite &= jnp.all(jnp.isfinite(scores) | ~valid)
    higher = (scores > target_scores) & valid & (ids != users.targets[:, None])

    def among(items):  # how many of each row's `items` in this chunk are higher
      columns = items - ids[0]
      inside = (columns >= 0) & (columns < len(ids))
      picked = jnp.take_along_axis(higher, jnp.clip(columns, 0, len(ids) - 1), axis=1)
      return jnp.sum(picked & inside, axis=1)

    block = jnp.stack([jnp.sum(higher, axis=1), among(users.seen), among(users.drawn)])
    return counts + block, finite

  start = (jnp.zeros((3, len(users.queries)), jnp.int32), jnp.bool_(True))
  return lax.fori_loop(0, chunks.shape[0], add_block, start)


@functools.partial(jax.jit, static_argnames="k")
def _chunk_top(chunks: jax.Array, users: UserChunk, temperature, num_items, k: int):
  """([users, k] the highest-scored ids, best first, ties to the lower id; whether every score
  of items 1..N is finite)."""
  rows = len(users.queries)

  def merge_block(chunk, state):
    best_scores, best_ids, finite = state
    scores, ids, valid = _block(chunks, chunk, users, temperature, num_items)
    finite &= jnp.all(jnp.isfinite(scores) | ~valid)
    block_scores, columns = lax.top_k(jnp.where(valid, scores, -jnp.inf), min(k, len(ids)))
    # Earlier columns win ties in top_k: the running best holds the lower ids.
    merged_scores = jnp.concatenate([best_scores, block_scores], axis=1)
    merged_ids = jnp.concatenate([best_ids, ids[columns]], axis=1)
    best_scores, positions = lax.top_k(merged_scores, k)
    return best_scores, jnp.take_along_axis(merged_ids, positions, axis=1), finite

  start = (jnp.full((rows, k), -jnp.inf), jnp.zeros((rows, k), jnp.int32), jnp.bool_(True))
  _, best_ids, finite = lax.fori_loop(0, chunks.shape[0], merge_block, start)
  return best_ids, finite


def _checked(values: jax.Array, finite: jax.Array, rows: int) -> np.ndarray:
  """`values`' first `rows` (its last axis) as int64 on the host; non-finite scores fail."""
  if not bool(finite):
    raise ValueError(NOT_FINITE)
  return np.asarray(values, np.int64)[..., :rows]


def chunk_counts(
  chunks: jax.Array, num_items: int, temperature: float, users: UserChunk, rows: int
) -> np.ndarray:
  """[3, rows] int64 of the first `rows` users: candidates among items 1..N scored strictly
  above the target (never the target itself), those of them seen, those drawn.

  Raises:
    ValueError: if any score of an item 1..N is not finite.
  """
  counts, finite = _chunk_counts(chunks, users, np.float32(temperature), num_items)
  return _checked(counts, finite, rows)


def chunk_top(
  chunks: jax.Array, num_items: int, temperature: float, users: UserChunk, rows: int, k: int
) -> np.ndarray:
  """[rows, k] int64 the first `rows` users' highest-scored items 1..N, best first, ties to
  the lower id (k at most N).

  Raises:
    ValueError: if any score of an item 1..N is not finite.
  """
  best_ids, finite = _chunk_top(chunks, users, np.float32(temperature), num_items, k)
  return _checked(best_ids.T, finite, rows).T
