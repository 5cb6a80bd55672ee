"""Baselines that return a user's own items: the most recent, or the most frequent, first.

Where users come back to items, "the last thing again" is the ranker a model must beat. Each
baseline scores the catalogue with the user's whole history before the target (the items the
filtered protocol removes) above every other item, in a strict order so that no tie can favour
the target, and the other items by popularity below them. Both are popularity's device scorer
(`popularity.popularity_scorer`) with a per-user bias on the history items, so the ranks
follow the protocol's rules exactly; on the filtered figure the history is removed, and a target
that repeats none of it ranks as under popularity. Retrieval only: ranking slates hold
never-seen items, where these are popularity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from unipinrec.data.examples import EvalExamples
from unipinrec.evaluation import catalogue, evaluate, popularity

# (count, last position, longest history) of a user's history items -> values that order them,
# distinct within the user's history.
HistoryKey = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def history_pairs(
  histories: Sequence[np.ndarray], num_columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The distinct (row, item) pairs of `histories[row]` (items in time order).

  Returns:
    (row, item, count, last position) of each pair: how often the row's history holds the
    item, and the position (0-based) of its latest occurrence.
  """
  lengths = np.asarray([len(h) for h in histories], np.int64)
  owner = np.repeat(np.arange(len(histories)), lengths)
  items = np.concatenate([np.zeros(0, np.int64), *histories]).astype(np.int64)
  position = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  keys, inverse, counts = np.unique(
    owner * num_columns + items, return_inverse=True, return_counts=True
  )
  last = np.zeros(len(keys), np.int64)
  np.maximum.at(last, inverse, position)
  return keys // num_columns, keys % num_columns, counts, last


def history_scorer(
  histories: Sequence[np.ndarray], ranks: np.ndarray, key: HistoryKey
) -> catalogue.DotScorer:
  """The `popularity_ranks` `ranks` ([N + 1]) for each user of `histories` (items in time
  order), each distinct history item lifted above every item, the greatest `key` highest.

  Raises:
    ValueError: if the highest score is past float32's exact integers.
  """
  rows, items, counts, last = history_pairs(histories, len(ranks))
  keys = key(counts, last, max((len(h) for h in histories), default=0))
  keep = items > 0  # the padding item is never scored
  order = np.lexsort((keys[keep], rows[keep]))
  rows, items = rows[keep][order], items[keep][order]
  per_row = np.bincount(rows, minlength=len(histories))
  positions = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
  width = max(per_row.max(initial=0), 1)
  first = int(np.max(ranks[1:], where=np.isfinite(ranks[1:]), initial=-1)) + 1
  if first + width > popularity.EXACT_INTEGERS:
    raise ValueError(f"history baselines: scores up to {first + width - 1}; at most 2^24 exact")
  history_items = np.zeros((len(histories), width), np.int32)
  history_bias = np.zeros((len(histories), width), np.float32)
  history_items[rows, positions] = items
  # Each item's score, its rank plus the bias, becomes first + its position in the row's order:
  # distinct integers above every rank, exact in float32, so no tie can favour the target.
  history_bias[rows, positions] = first + positions - ranks[items]
  return popularity.popularity_scorer(ranks, len(histories), history_items, history_bias)


HISTORY_BASELINES: dict[str, HistoryKey] = {
  # The most recent item, then the next most recent distinct ones.
  "most_recent": lambda counts, last, longest: last,
  # The most frequent item, ties broken by recency.
  "most_frequent": lambda counts, last, longest: counts * longest + last,
}


def evaluate_history_baselines(
  examples: EvalExamples,
  item_log_frequency: np.ndarray,
  sampled_negatives: np.ndarray | None = None,
  config: catalogue.EvalConfig = catalogue.DEFAULT,
  item_ranks: np.ndarray | None = None,
) -> dict[str, dict]:
  """Retrieval metrics of each `HISTORY_BASELINES` ranker, with popularity from
  `item_log_frequency` (or its `popularity.popularity_ranks`, `item_ranks`, where the caller
  has them) and the history from `examples.retrieval_seen` (all of it), ranked on the device in
  `config`'s chunks."""
  reports = {}
  targets, seen = examples.retrieval_targets, examples.retrieval_seen
  if item_ranks is None:
    item_ranks = popularity.popularity_ranks(item_log_frequency)
  num_items = len(item_log_frequency) - 1
  for name, key in HISTORY_BASELINES.items():
    scorer = history_scorer(seen, item_ranks, key)
    ranked = catalogue.catalogue_ranks(scorer, num_items, targets, seen, sampled_negatives, config)
    reports[name] = evaluate.retrieval_report(ranked)
  return reports
