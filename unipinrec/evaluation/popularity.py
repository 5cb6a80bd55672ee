"""The popularity baseline's catalogue scores as a `catalogue.DotScorer`: ranked on the device.

Each item's score is one number, so the item vectors are [N + 1, 1] against a query of one.
They hold the rank of each item's popularity among the distinct values rather than the value:
float64 log frequencies of large counts that differ can round to one float32 and tie, and the
history baselines add integer biases to these scores, which stay exact on integers.
"""

from __future__ import annotations

import numpy as np

from unipinrec.evaluation import catalogue

# Float32 holds every integer up to 2^24 exactly: ranks and biases beyond it would round.
EXACT_INTEGERS = 1 << 24


def popularity_ranks(item_log_frequency: np.ndarray) -> np.ndarray:
  """[N + 1] float32 each item's rank (0 the least) among the distinct finite values of items
  1..N of `item_log_frequency`, in the same order; a non-finite value is kept (the ranking
  then fails on it, as on the values), and the padding item 0 scores 0.

  Raises:
    ValueError: with more distinct values than float32 holds exact integers (2^24).
  """
  values = np.asarray(item_log_frequency)[1:]
  finite = np.isfinite(values)
  distinct = np.unique(values[finite])
  if len(distinct) > EXACT_INTEGERS:
    raise ValueError(
      f"popularity: {len(distinct)} distinct item frequencies; at most 2^24 rank exactly"
    )
  ranks = np.where(finite, np.searchsorted(distinct, values), values).astype(np.float32)
  return np.concatenate([np.zeros(1, np.float32), ranks])


def popularity_scorer(
  ranks: np.ndarray,
  num_users: int,
  history_items: np.ndarray | None = None,
  history_bias: np.ndarray | None = None,
) -> catalogue.DotScorer:
  """Every item scored by its `popularity_ranks` ([N + 1]) for each of `num_users` users, plus
  a `catalogue.DotScorer`'s history bias ([U, H] each)."""
  queries = np.ones((num_users, 1), np.float32)
  return catalogue.DotScorer(queries, ranks[:, None], 1.0, history_items, history_bias)
