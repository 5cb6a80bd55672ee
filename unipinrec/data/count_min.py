"""A count-min sketch of item counts, for log-Q without a per-item count table (PinRec's choice).

A sketch of width w and depth d holds d rows of w counters; row j adds an item's count at
column h_j(item), with h_j(x) = ((a_j x + b_j) mod p) mod w drawn from a 2-universal family
(Carter and Wegman) with the prime p = 2^31 - 1. An item's estimate is its smallest counter.

The guarantee (Cormode and Muthukrishnan, 2005): with w = ceil(e / eps) and
d = ceil(ln(1 / delta)), after a stream of `total` counts, for every item

  estimate >= true count, always (counters only grow, and the item's own count is in each);
  estimate <= true count + eps * total, with probability >= 1 - delta per query.

Memory is d x w counters, whatever the number of distinct items.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

# Mersenne prime 2^31 - 1: ids and coefficients below it keep a x + b under 2^62 (int64-safe).
PRIME = (1 << 31) - 1
_QUERY_CHUNK = 1 << 20  # ids queried at a time when filling the [N + 1] array


def width_for_error(eps: float) -> int:
  """The width w = ceil(e / eps) that bounds the overestimate by eps x the stream's total."""
  if not 0.0 < eps < 1.0:
    raise ValueError(f"eps={eps}: expected a share in (0, 1)")
  return math.ceil(math.e / eps)


def depth_for_error(delta: float) -> int:
  """The depth d = ceil(ln(1 / delta)) under which a query breaks the bound w.p. <= delta."""
  if not 0.0 < delta < 1.0:
    raise ValueError(f"delta={delta}: expected a probability in (0, 1)")
  return max(1, math.ceil(math.log(1.0 / delta)))


class CountMinSketch:
  """Approximate counts of integer ids in [0, 2^31 - 1), in `depth` x `width` int64 counters.

  Attributes:
    multipliers, offsets: [depth] int64, row j's hash coefficients a_j in [1, p), b_j in [0, p).
    table: [depth, width] int64 counters.
    total: the sum of every count added (exact).
  """

  def __init__(self, width: int, depth: int, seed: int = 0):
    """A zeroed sketch whose hash functions are a deterministic function of `seed`.

    Raises:
      ValueError: on a width or depth below 1, or a width of p or more.
    """
    if not 1 <= width < PRIME:
      raise ValueError(f"count-min width={width}: expected 1 to {PRIME - 1} counters per row")
    if depth < 1:
      raise ValueError(f"count-min depth={depth}: expected at least 1 hash row")
    rng = np.random.default_rng([seed, 3])
    self.width = width
    self.depth = depth
    self.multipliers = rng.integers(1, PRIME, size=depth, dtype=np.int64)
    self.offsets = rng.integers(0, PRIME, size=depth, dtype=np.int64)
    self.table = np.zeros((depth, width), np.int64)
    self.total = 0

  def buckets(self, ids: np.ndarray) -> np.ndarray:
    """[depth, n] column of each of the n ids in each row, in [0, width).

    Raises:
      ValueError: on an id outside [0, p): it would share every row's column with id mod p.
    """
    ids = np.asarray(ids, np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= PRIME):
      raise ValueError(f"count-min ids must lie in [0, {PRIME}); got {ids.min()}..{ids.max()}")
    # a < 2^31 and x < 2^31: a x + b < 2^62 + 2^31, inside int64.
    hashed = (self.multipliers[:, None] * ids[None, :] + self.offsets[:, None]) % PRIME
    return hashed % self.width

  def add(self, ids: np.ndarray, counts: np.ndarray | None = None) -> None:
    """Adds `counts` (default one each; non-negative) to the n `ids`; repeated ids add up."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    counts = np.ones(ids.shape, np.int64) if counts is None else np.asarray(counts, np.int64)
    counts = np.broadcast_to(counts.reshape(-1) if counts.ndim else counts, ids.shape)
    if counts.size and counts.min() < 0:
      raise ValueError("count-min counts must be non-negative: the lower bound needs it")
    rows = np.broadcast_to(np.arange(self.depth)[:, None], (self.depth, ids.size))
    np.add.at(self.table, (rows, self.buckets(ids)), counts[None, :])
    self.total += int(counts.sum())

  def estimate(self, ids: np.ndarray) -> np.ndarray:
    """[n] int64 estimates of the ids' counts: never below the truth (see the module docstring)."""
    columns = self.buckets(ids)
    return self.table[np.arange(self.depth)[:, None], columns].min(axis=0)


def sketch_log_frequency(
  item_chunks: Iterable[np.ndarray], num_items: int, width: int, depth: int, seed: int = 0
) -> np.ndarray:
  """[N + 1] add-one smoothed log shares of a stream of item ids, from a count-min sketch.

  The stream arrives as chunks of item ids (the training actions in log order; the sketch's
  counts do not depend on the order). Each chunk goes into the sketch and is dropped, so no
  per-item count table exists until the end, when the N ids the model knows (1..N) are queried
  once to fill the array the train step reads. Smoothed as `examples.item_log_frequency`:
  share = (estimate + 1) / (total + N), and id 0 (padding) gets log 0 = -inf. Overestimates
  make the shares sum to 1 or a little more; log-Q reads each negative's share alone.
  """
  sketch = CountMinSketch(width, depth, seed)
  for chunk in item_chunks:
    chunk = np.asarray(chunk).reshape(-1)
    sketch.add(chunk[chunk > 0])  # padding is no action, as in the exact counts
  counts = np.zeros(num_items + 1, np.float64)
  for start in range(1, num_items + 1, _QUERY_CHUNK):  # bounds the [depth, chunk] columns
    stop = min(start + _QUERY_CHUNK, num_items + 1)
    counts[start:stop] = sketch.estimate(np.arange(start, stop)) + 1.0
  with np.errstate(divide="ignore"):
    return np.log(counts / (sketch.total + num_items)).astype(np.float32)
