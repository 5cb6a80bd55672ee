"""Full-catalogue target ranks and top-K in bounded memory: users and items in chunks, exact.

A scorer gives the scores of a chunk of users against a chunk of items (`BlockScorer`), so
no [users, catalogue] matrix is ever held: memory is one [user_chunk, item_chunk] block
whatever the catalogue. The ranks are the protocol's (`metrics.target_ranks` and
`metrics.sampled_ranks`) exactly: the target's score comes from the scorer first, then every
block counts its candidates scored strictly above it, less the user's seen items among them
(the filtered figure), less the target itself, which never counts. A `DotScorer` (the
model's) is scored and counted on the device a block at a time (`dot_blocks`), from its stored
item vectors or, for a catalogue too large to hold them, from an encoder of each chunk's ids;
any other scorer gives NumPy blocks.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from absl import logging

from unipinrec.config import EvalConfig
from unipinrec.evaluation import dot_blocks

# (rows of the users, [I] item ids in increasing order) -> [users, I] scores.
BlockScorer = Callable[[slice, np.ndarray], np.ndarray]


DEFAULT = EvalConfig()
_LOGGED_SCORES = 10**10  # a chunk of users scoring this many items takes a while: log it


def item_columns(ids: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Where `items` sit among the increasing `ids`: (column of each, whether it is there)."""
  columns = np.minimum(np.searchsorted(ids, items), max(len(ids) - 1, 0))
  return columns, ids[columns] == items if len(ids) else np.zeros(len(items), bool)


def _blocks(
  score_block: BlockScorer, num_items: int, rows: slice, item_chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
  """(first item id, [users, I] scores) of items 1..N in chunks; non-finite scores fail."""
  for start in range(1, num_items + 1, item_chunk):
    block = np.asarray(score_block(rows, np.arange(start, min(start + item_chunk, num_items + 1))))
    if not np.all(np.isfinite(block)):
      raise ValueError(dot_blocks.NOT_FINITE)
    yield start, block


def _seen_pairs(seen: Sequence[np.ndarray], targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(row, item) of each user's distinct seen items other than the target and the padding,
  ordered by item."""
  lengths = np.asarray([len(items) for items in seen], np.int64)
  rows = np.repeat(np.arange(len(seen)), lengths)
  items = np.concatenate([np.zeros(0, np.int64), *seen]).astype(np.int64)
  keep = (items > 0) & (items != targets[rows])
  keys = np.unique(items[keep] * len(seen) + rows[keep])
  return keys % len(seen), keys // len(seen)


def _ranks(
  above: np.ndarray, above_seen: np.ndarray, above_sampled: np.ndarray, sampled: bool
) -> dict[str, np.ndarray]:
  """`catalogue_ranks`' ranks of the counts of candidates scored above the targets."""
  ranks = {"retrieval": above - above_seen, "retrieval_unfiltered": above}
  if sampled:
    ranks["retrieval_sampled"] = above_sampled
  return ranks


def _chunk_ranks(
  score_block: BlockScorer,
  num_items: int,
  item_chunk: int,
  rows: slice,
  targets: np.ndarray,
  seen: Sequence[np.ndarray],
  negatives: np.ndarray | None,
) -> dict[str, np.ndarray]:
  """`catalogue_ranks` of the users in `rows`, from NumPy blocks."""
  users = np.arange(len(targets))
  target_ids, target_columns = np.unique(targets, return_inverse=True)
  target_scores = np.asarray(score_block(rows, target_ids))[users, target_columns][:, None]
  seen_rows, seen_items = _seen_pairs(seen, targets)
  above = np.zeros(len(targets), np.int64)
  above_seen = np.zeros(len(targets), np.int64)
  above_sampled = np.zeros(len(targets), np.int64)
  for start, block in _blocks(score_block, num_items, rows, item_chunk):
    stop = start + block.shape[1]
    higher = block > target_scores
    inside = (targets >= start) & (targets < stop)
    higher[users[inside], targets[inside] - start] = False
    above += np.count_nonzero(higher, axis=1)
    first, last = np.searchsorted(seen_items, [start, stop])
    pair_rows = seen_rows[first:last]
    above_seen += np.bincount(
      pair_rows, higher[pair_rows, seen_items[first:last] - start], len(targets)
    ).astype(np.int64)
    if negatives is not None:
      drawn_rows, drawn = np.nonzero((negatives >= start) & (negatives < stop))
      wins = higher[drawn_rows, negatives[drawn_rows, drawn] - start]
      above_sampled += np.bincount(drawn_rows, wins, len(targets)).astype(np.int64)
  return _ranks(above, above_seen, above_sampled, negatives is not None)


def _users_per_chunk(num_users: int, user_chunk: int) -> int:
  """The users of one device chunk: a power of two when there are fewer than `user_chunk`, so
  that subsets of users share few compiled shapes."""
  return min(user_chunk, _bit_ceil(num_users))


def _bit_ceil(value: int) -> int:
  """The least power of two at least `value` (1 for 0)."""
  return 1 << max(value - 1, 0).bit_length()


def _seen_matrix(seen: Sequence[np.ndarray], targets: np.ndarray, width: int) -> np.ndarray:
  """[users, width] each user's distinct seen items other than the target, zeros after."""
  rows, items = _seen_pairs(seen, targets)
  order = np.argsort(rows, kind="stable")
  counts = np.bincount(rows, minlength=len(seen))
  positions = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
  matrix = np.zeros((len(seen), width), np.int32)
  matrix[rows[order], positions] = items[order]
  return matrix


def _user_chunk(
  scorer: DotScorer,
  rows: slice,
  size: int,
  targets: np.ndarray,
  seen: np.ndarray,
  drawn: np.ndarray,
) -> dot_blocks.UserChunk:
  """The `rows` of `scorer` with their targets, seen and drawn items, zero-padded to `size`."""
  history = (None, None)
  if scorer.history_items is not None:
    history = (scorer.history_items[rows], scorer.history_bias[rows])
  users = (scorer.queries[rows], *history, targets.astype(np.int32), seen, drawn.astype(np.int32))
  return dot_blocks.UserChunk(
    *(
      None
      if values is None
      else np.pad(values, [(0, size - len(values))] + [(0, 0)] * (values.ndim - 1))
      for values in users
    )
  )


def _dot_chunk_ranks(
  scorer: DotScorer, num_items: int, every_seen: Sequence[np.ndarray], config: EvalConfig
) -> Callable[..., dict[str, np.ndarray]]:
  """A `_chunk_ranks` (rows, targets, seen, negatives) of `scorer` on the device, for the
  users of `every_seen`."""
  items = dot_blocks.device_items(scorer.items, num_items, config.item_chunk)
  size = _users_per_chunk(len(every_seen), config.user_chunk)
  # Every chunk's seen items padded to one width: one compiled shape.
  width = _bit_ceil(max(map(len, every_seen), default=1))

  def chunk_ranks(rows, targets, seen, negatives):
    drawn = np.zeros((len(targets), 0), np.int32) if negatives is None else negatives
    users = _user_chunk(scorer, rows, size, targets, _seen_matrix(seen, targets, width), drawn)
    counts = dot_blocks.chunk_counts(items, scorer.temperature, users, len(targets))
    return _ranks(*counts.T, negatives is not None)

  return chunk_ranks


def catalogue_ranks(
  scorer: BlockScorer | DotScorer,
  num_items: int,
  targets: np.ndarray,
  seen: Sequence[np.ndarray],
  sampled_negatives: np.ndarray | None = None,
  config: EvalConfig = DEFAULT,
) -> dict[str, np.ndarray]:
  """Each user's target rank among items 1..N, as `metrics.target_ranks` gives it.

  Args:
    scorer: the scores of users (rows of `targets`) against item ids; a `DotScorer` is
      scored on the device.
    num_items: N.
    targets: [U] target item ids in 1..N.
    seen: per user, the items the filtered protocol removes (never the target).
    sampled_negatives: [U, M] drawn items of the sampled-100 protocol, or None.
    config: the chunk sizes.

  Returns:
    [U] int64 ranks: "retrieval" (filtered), "retrieval_unfiltered" and, with
    `sampled_negatives`, "retrieval_sampled" (the target among the drawn items only).

  Raises:
    ValueError: if any score of an item 1..N is not finite.
  """
  targets = np.asarray(targets, np.int64)
  if isinstance(scorer, DotScorer):
    chunk_ranks = _dot_chunk_ranks(scorer, num_items, seen, config)
  else:
    chunk_ranks = functools.partial(_chunk_ranks, scorer, num_items, config.item_chunk)
  parts = {}
  for first in range(0, len(targets), config.user_chunk):
    rows = slice(first, first + config.user_chunk)
    negatives = None if sampled_negatives is None else np.asarray(sampled_negatives[rows], np.int64)
    started = time.time()
    chunk = chunk_ranks(rows, targets[rows], seen[rows], negatives)
    for name, values in chunk.items():
      parts.setdefault(name, []).append(values)
    if len(chunk["retrieval"]) * num_items >= _LOGGED_SCORES:
      logging.info(
        "ranked users %d-%d of %d against %d items in %.0f s",
        first + 1,
        first + len(chunk["retrieval"]),
        len(targets),
        num_items,
        time.time() - started,
      )
  return {name: np.concatenate(values) for name, values in parts.items()}


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The `k` highest of each row's `scores` with their `ids`, in no particular order."""
  if scores.shape[1] <= k:
    return scores, ids
  best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  return np.take_along_axis(scores, best, 1), np.take_along_axis(ids, best, 1)


def _chunk_top(score_block: BlockScorer, num_items: int, k: int, item_chunk: int, rows: slice):
  """`top_items` of the users in `rows`, from NumPy blocks."""
  best_scores = np.full((rows.stop - rows.start, 0), -np.inf)
  best_ids = np.zeros((rows.stop - rows.start, 0), np.int64)
  for start, block in _blocks(score_block, num_items, rows, item_chunk):
    ids = np.broadcast_to(np.arange(start, start + block.shape[1]), block.shape)
    block_scores, block_ids = _best(block, ids, k)
    best_scores, best_ids = _best(
      np.concatenate([best_scores, block_scores], 1), np.concatenate([best_ids, block_ids], 1), k
    )
  order = np.argsort(-best_scores, axis=1, kind="stable")
  return np.take_along_axis(best_ids, order, 1)


def _dot_chunk_top(
  scorer: DotScorer, num_items: int, num_users: int, k: int, config: EvalConfig
) -> Callable[[slice], np.ndarray]:
  """A `_chunk_top` (rows) of `scorer` on the device, for `num_users` users."""
  items = dot_blocks.device_items(scorer.items, num_items, config.item_chunk)
  size = _users_per_chunk(num_users, config.user_chunk)

  def chunk_top(rows):
    count = rows.stop - rows.start
    empty = np.zeros((count, 0), np.int32)
    users = _user_chunk(scorer, rows, size, np.zeros(count, np.int32), empty, empty)
    return dot_blocks.chunk_top(items, scorer.temperature, users, count, k)

  return chunk_top


def top_items(
  scorer: BlockScorer | DotScorer, num_items: int, num_users: int, k: int, config: EvalConfig
) -> np.ndarray:
  """[U, min(k, N)] each user's highest-scored items 1..N, best first (nothing removed).

  Each block's best `k` are merged into the running best `k`: exact, in one block of memory.
  A `DotScorer` is scored on the device, where ties go to the lower item id.
  """
  k = min(k, num_items)
  if isinstance(scorer, DotScorer):
    chunk_top = _dot_chunk_top(scorer, num_items, num_users, k, config)
  else:
    chunk_top = functools.partial(_chunk_top, scorer, num_items, k, config.item_chunk)
  users = range(0, num_users, config.user_chunk)
  return np.concatenate([chunk_top(slice(u, min(u + config.user_chunk, num_users))) for u in users])


@dataclasses.dataclass(frozen=True)
class DotScorer:
  """A model's retrieval scores: query . item vector / temperature, plus a per-user bias on
  some items (the history bias of `model.repeat_buckets`). `catalogue_ranks` and `top_items`
  score it on the device; `score_block` is its `BlockScorer` on the host. `items` holds the
  item vectors or, for a catalogue too large to hold them, an encoder that computes them from
  the ids where they are scored."""

  queries: np.ndarray  # [U, S]
  items: np.ndarray | dot_blocks.ItemEncoder  # [N + 1, S] vectors, row 0 the padding item
  temperature: float
  history_items: np.ndarray | None = None  # [U, H] items whose score gains the bias; 0 none
  history_bias: np.ndarray | None = None  # [U, H], 0 on the padding slots

  def vectors_of(self, items: np.ndarray) -> np.ndarray:
    """[...] item ids -> [..., S] their vectors."""
    if isinstance(self.items, dot_blocks.ItemEncoder):
      return self.items(items)
    return self.items[items]

  def score_block(self, rows: slice, items: np.ndarray) -> np.ndarray:
    """[users, I] scores of the users in `rows` against the increasing item ids `items`."""
    scores = self.queries[rows] @ self.vectors_of(items).T / np.float32(self.temperature)
    if self.history_items is not None:
      history = self.history_items[rows]
      owners = np.repeat(np.arange(len(history)), history.shape[1])
      columns, found = item_columns(items, history.ravel())
      np.add.at(scores, (owners[found], columns[found]), self.history_bias[rows].ravel()[found])
    return scores

  def subset(self, rows: np.ndarray) -> DotScorer:
    """The scorer of the users `rows` only."""
    if self.history_items is None:
      return dataclasses.replace(self, queries=self.queries[rows])
    return dataclasses.replace(
      self,
      queries=self.queries[rows],
      history_items=self.history_items[rows],
      history_bias=self.history_bias[rows],
    )


def rows_scorer(score_rows: Callable[[slice], np.ndarray]) -> BlockScorer:
  """A `BlockScorer` of a scorer of whole [users, N + 1] rows (small catalogues only), which
  scores each chunk of users once."""
  last: dict = {}

  def score_block(rows: slice, items: np.ndarray) -> np.ndarray:
    if last.get("rows") != rows:
      last.update(rows=rows, scores=score_rows(rows))
    return last["scores"][:, items]

  return score_block
