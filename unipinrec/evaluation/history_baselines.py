"""Baselines that return a user's own items: the most recent, or the most frequent, first.

Where users come back to items, "the last thing again" is the ranker a model must beat. Each
baseline scores the catalogue with the user's whole history before the target (the items the
filtered protocol removes) above every other item, in a strict order so that no tie can favour
the target, and the other items by popularity below them. The scores go through the same
chunked ranking as popularity's, so the ranks follow the protocol's rules exactly; on the
filtered figure the history is removed, and a target that repeats none of it ranks as under
popularity. Retrieval only: ranking slates hold never-seen items, where these are popularity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from unipinrec.data.examples import EvalExamples
from unipinrec.evaluation import evaluate


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


def _history_first(
  histories: Sequence[np.ndarray], popularity: np.ndarray, key: Callable
) -> np.ndarray:
  """[U, N + 1] scores: popularity, with each history item above all of it by `key`.

  `key(count, last position, longest history)` must give the history items of a row
  distinct non-negative values.
  """
  popularity = np.asarray(popularity, np.float64)
  scores = np.array(np.broadcast_to(popularity, (len(histories), len(popularity))))
  rows, items, counts, last = history_pairs(histories, len(popularity))
  longest = max((len(h) for h in histories), default=0)
  scores[rows, items] = popularity[1:].max() + 1.0 + key(counts, last, longest)
  return scores


def most_recent_scores(histories: Sequence[np.ndarray], popularity: np.ndarray) -> np.ndarray:
  """The user's most recent history item, then the next most recent distinct ones, then
  popularity: [U, N + 1] scores from `histories[u]` (items in time order) and [N + 1]
  popularity scores."""
  return _history_first(histories, popularity, lambda counts, last, longest: last)


def most_frequent_scores(histories: Sequence[np.ndarray], popularity: np.ndarray) -> np.ndarray:
  """The user's most frequent history item, ties broken by recency, then popularity: [U, N + 1]
  scores from `histories[u]` (items in time order) and [N + 1] popularity scores."""
  return _history_first(
    histories, popularity, lambda counts, last, longest: counts * longest + last
  )


HISTORY_BASELINES = {"most_recent": most_recent_scores, "most_frequent": most_frequent_scores}


def evaluate_history_baselines(
  examples: EvalExamples,
  item_log_frequency: np.ndarray,
  sampled_negatives: np.ndarray | None = None,
) -> dict[str, dict]:
  """Retrieval metrics of each `HISTORY_BASELINES` scorer, with popularity from
  `item_log_frequency` and the history from `examples.retrieval_seen` (all of it)."""
  reports = {}
  for name, scores in HISTORY_BASELINES.items():

    def score_rows(rows: slice, scores=scores) -> np.ndarray:
      return scores(examples.retrieval_seen[rows], item_log_frequency)

    ranks = evaluate.chunked_ranks(score_rows, examples, sampled_negatives)
    reports[name] = evaluate.retrieval_report(ranks)
  return reports
