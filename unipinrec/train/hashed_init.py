"""The co-occurrence warm start (item_init.py) for hashed item ids.

A hashed id part has no row per item to copy a co-occurrence vector into: item i reads row
h_j(i) of each of the k tables and sums ("sum") or concatenates ("concat") them. The rows
are fitted instead, so that each seen item's id part approximates its vector c_i in least
squares weighted by the item's training count (colliding items share rows, and the frequent
ones should keep theirs). For "concat" each table holds its own slice of c_i, and the
weighted mean of the slices hashed to a row is the exact fit. For "sum" the tables share
the whole vector: block coordinate descent sets one table's rows at a time to the weighted
mean of what the other tables leave unexplained, each step the exact minimum given the
others, so the error never rises from sweep to sweep.
"""

from __future__ import annotations

import numpy as np

from unipinrec.config import ItemInitConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.item_encoder import hash_buckets
from unipinrec.train import item_init
from unipinrec.types import UserLogs

SWEEPS = 16  # block coordinate descent sweeps over the k tables of a "sum" id part


def combined_rows(table: np.ndarray, buckets: np.ndarray, combine: str) -> np.ndarray:
  """[M, D] the id parts that [R, k, w] `table` gives items hashed to [M, k] `buckets`.

  NumPy's copy of `ItemEncoder.id_part` for hashed ids.
  """
  parts = table[buckets, np.arange(buckets.shape[1])]  # [M, k, w]
  return parts.sum(axis=1) if combine == "sum" else parts.reshape(len(parts), -1)


def _weighted_row_means(
  rows_of_items: np.ndarray, weights: np.ndarray, values: np.ndarray, num_rows: int
) -> tuple[np.ndarray, np.ndarray]:
  """([num_rows, w] the `weights`-weighted mean of `values` over the items at each row,
  [num_rows] bool: some item is there; the other rows' means are zero)."""
  totals = np.bincount(rows_of_items, weights, minlength=num_rows)
  sums = np.zeros((num_rows, values.shape[1]))
  np.add.at(sums, rows_of_items, weights[:, None] * values)
  touched = totals > 0
  sums[touched] /= totals[touched, None]
  return sums, touched


def fit_hashed_rows(
  table: np.ndarray,
  buckets: np.ndarray,
  vectors: np.ndarray,
  weights: np.ndarray,
  combine: str,
  sweeps: int = SWEEPS,
) -> np.ndarray:
  """`table` with the rows the items hash to fitted to their vectors in weighted least squares.

  Args:
    table: [R, k, w] the hashed tables before the fit; rows no item hashes to keep these.
    buckets: [M, k] int, each item's row in each table (`hash_buckets`).
    vectors: [M, D] the vectors c_i their id parts should approximate.
    weights: [M] positive weights of the items' errors.
    combine: "sum" (w = D) or "concat" (w = D / k).
    sweeps: for "sum", passes of block coordinate descent over the k tables, from zero rows.

  Returns:
    [R, k, w] float32 tables.
  """
  num_rows, num_functions, width = table.shape
  fitted = np.zeros((num_functions, num_rows, width))
  touched = np.zeros((num_functions, num_rows), bool)
  if combine == "concat":
    slices = vectors.reshape(len(vectors), num_functions, width)
    for j in range(num_functions):
      fitted[j], touched[j] = _weighted_row_means(buckets[:, j], weights, slices[:, j], num_rows)
  else:
    combined = np.zeros(vectors.shape)
    for _ in range(sweeps):
      for j in range(num_functions):
        own = fitted[j][buckets[:, j]]
        residual = vectors - (combined - own)
        fitted[j], touched[j] = _weighted_row_means(buckets[:, j], weights, residual, num_rows)
        combined += fitted[j][buckets[:, j]] - own
  result = table.astype(np.float32)
  for j in range(num_functions):
    result[touched[j], j] = fitted[j][touched[j]]
  return result


def hashed_table(
  logs: UserLogs, users: np.ndarray, model: ModelConfig, config: ItemInitConfig
) -> tuple[np.ndarray, int, float]:
  """The hashed tables fitted to the co-occurrence vectors of the items `users` acted on.

  The vectors are the plain table's (`item_init.scaled_vectors`), weighted by the items'
  action counts in `users`' logs. Rows no such item hashes to keep a normal(stddev) draw.

  Returns:
    ([hash_rows, k, w] float32 tables (the padding rows past hash_rows are the caller's),
    the number of items fitted, and the fit's weighted squared error relative to the
    vectors' weighted squared norm: what the collisions cost).
  """
  sequences = item_init.training_sequences(logs, users)
  vectors, seen = item_init.scaled_vectors(sequences, logs.num_items, model.embed_dim, config)
  counts = np.bincount(np.concatenate(sequences), minlength=logs.num_items + 1)
  items = np.flatnonzero(seen)
  buckets = hash_buckets(items, model.hash_functions, model.hash_rows, xp=np)
  concat = model.hash_combine == "concat"
  width = model.embed_dim // (model.hash_functions if concat else 1)
  rng = np.random.default_rng(config.seed)
  draw = rng.normal(0.0, config.stddev, (model.hash_rows, model.hash_functions, width))
  weights = counts[items].astype(np.float64)
  table = fit_hashed_rows(draw, buckets, vectors[items], weights, model.hash_combine)
  error = vectors[items] - combined_rows(table, buckets, model.hash_combine)
  norms = weights @ np.square(vectors[items]).sum(axis=1)
  return table, len(items), float(weights @ np.square(error).sum(axis=1) / norms)
