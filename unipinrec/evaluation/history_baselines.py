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
from unipinrec.evaluation import catalogue, evaluate


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
  histories: Sequence[np.ndarray], popularity: np.ndarray, key: Callable, items: np.ndarray | None
) -> np.ndarray:
  """[U, I] scores of the increasing item ids `items` (None: all, I = N + 1): popularity, with
  each history item above all of it by `key`.

  `key(count, last position, longest history)` must give the history items of a row
  distinct non-negative values.
  """
  popularity = np.asarray(popularity, np.float64)
  items = np.arange(len(popularity)) if items is None else np.asarray(items)
  scores = np.array(np.broadcast_to(popularity[items], (len(histories), len(items))))
  rows, history_items, counts, last = history_pairs(histories, len(popularity))
  columns, found = catalogue.item_columns(items, history_items)
  longest = max((len(h) for h in histories), default=0)
  first = popularity[1:].max() + 1.0
  scores[rows[found], columns[found]] = first + key(counts, last, longest)[found]
  return scores


def most_recent_scores(
  histories: Sequence[np.ndarray], popularity: np.ndarray, items: np.ndarray | None = None
) -> np.ndarray:
  """The user's most recent history item, then the next most recent distinct ones, then
  popularity: [U, I] scores of `items` (None: all) from `histories[u]` (items in time order)
  and [N + 1] popularity scores."""
  return _history_first(histories, popularity, lambda counts, last, longest: last, items)


def most_frequent_scores(
  histories: Sequence[np.ndarray], popularity: np.ndarray, items: np.ndarray | None = None
) -> np.ndarray:
  """The user's most frequent history item, ties broken by recency, then popularity: [U, I]
  scores of `items` (None: all) from `histories[u]` (items in time order) and [N + 1]
  popularity scores."""
  return _history_first(
    histories, popularity, lambda counts, last, longest: counts * longest + last, items
  )


HISTORY_BASELINES = {"most_recent": most_recent_scores, "most_frequent": most_frequent_scores}


def evaluate_history_baselines(
  examples: EvalExamples,
  item_log_frequency: np.ndarray,
  sampled_negatives: np.ndarray | None = None,
  config: catalogue.EvalConfig = catalogue.DEFAULT,
) -> dict[str, dict]:
  """Retrieval metrics of each `HISTORY_BASELINES` scorer, with popularity from
  `item_log_frequency` and the history from `examples.retrieval_seen` (all of it), ranked in
  `config`'s chunks."""
  reports = {}
  targets, seen = examples.retrieval_targets, examples.retrieval_seen
  for name, scores in HISTORY_BASELINES.items():

    def score_block(rows: slice, items: np.ndarray, scores=scores) -> np.ndarray:
      return scores(seen[rows], item_log_frequency, items)

    num_items = len(item_log_frequency) - 1
    ranks = catalogue.catalogue_ranks(
      score_block, num_items, targets, seen, sampled_negatives, config
    )
    reports[name] = evaluate.retrieval_report(ranks)
  return reports
