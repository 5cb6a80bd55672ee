"""Retrieval figures apart for cold targets (items held out of training) and warm ones.

A model that reads item features can retrieve an item it never trained on; these figures say
how well, beside the warm targets it did train on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from unipinrec.evaluation import metrics


def cold_warm_reports(
  ranks: np.ndarray,
  targets: np.ndarray,
  cold_items: np.ndarray,
  ks: Sequence[int] = metrics.RETRIEVAL_KS,
) -> dict[str, dict]:
  """`retrieval_cold` and `retrieval_warm`: `metrics.retrieval_metrics` of each side's targets.

  Args:
    ranks: [U] 0-based target ranks.
    targets: [U] target item ids.
    cold_items: [N + 1] bool, the items held out of training.
    ks: the cut-offs of HR@K and NDCG@K.

  Returns:
    Both sides' metrics; a side without targets reports NaN and `num_users` 0.
  """
  cold = np.asarray(cold_items)[np.asarray(targets)]
  return {
    "retrieval_cold": _side_metrics(np.asarray(ranks)[cold], ks),
    "retrieval_warm": _side_metrics(np.asarray(ranks)[~cold], ks),
  }


def _side_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict:
  if len(ranks):
    return metrics.retrieval_metrics(ranks, ks)
  # The mean of no targets is undefined: NaN, without NumPy's empty-mean warning.
  empty = dict.fromkeys(metrics.retrieval_metrics(np.zeros(1), ks), math.nan)
  return {**empty, "num_users": 0}
