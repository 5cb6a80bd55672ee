"""Retrieval and ranking metrics, as `PROTOCOL.md` defines them.

Pure NumPy on host arrays: evaluation sets are small enough, and host code
keeps the definitions readable next to the protocol text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RETRIEVAL_KS = (10, 50, 200)


def engaged_probability(probabilities: np.ndarray) -> np.ndarray:
  """[..., O] per-outcome probabilities -> [...] probability of any outcome (engaged).

  An action has one outcome, so the outcomes exclude each other and P(engaged) is
  their sum: exact for the world's probabilities and exclusive heads, capped at 1
  for independent sigmoids, whose sum can pass it.
  """
  return np.minimum(np.sum(probabilities, axis=-1), 1.0)


def target_ranks(
  scores: np.ndarray,
  targets: np.ndarray,
  excluded: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
  """Rank of each user's target among the catalogue.

  Args:
    scores: [U, N + 1] float scores; column 0 (padding) is never a candidate.
    targets: [U] target item ids in 1..N.
    excluded: per user, item ids removed from the candidates (the filtered
      protocol); the target itself is never removed.

  Returns:
    [U] int64: the number of candidates scored strictly above the target.

  Raises:
    ValueError: if any score is not finite (the protocol fails a NaN).
  """
  scores = np.asarray(scores, dtype=np.float64)
  if not np.all(np.isfinite(scores[:, 1:])):
    raise ValueError("retrieval scores contain NaN or inf")
  targets = np.asarray(targets)
  candidate = np.ones(scores.shape, dtype=bool)
  candidate[:, 0] = False
  if excluded is not None:
    for user, items in enumerate(excluded):
      candidate[user, np.asarray(items, dtype=np.int64)] = False
  rows = np.arange(len(targets))
  candidate[rows, targets] = True
  target_scores = scores[rows, targets][:, None]
  return np.sum((scores > target_scores) & candidate, axis=1)


def sampled_ranks(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
  """Rank of each target among drawn negatives only (the sampled-100 protocol).

  Args:
    scores: [U, N + 1] float scores.
    targets: [U] target item ids.
    negatives: [U, M] items the user never interacted with.

  Returns:
    [U] int64: the number of negatives scored strictly above the target.
  """
  scores = np.asarray(scores, dtype=np.float64)
  rows = np.arange(len(targets))
  target_scores = scores[rows, targets]
  negative_scores = np.take_along_axis(scores, np.asarray(negatives, np.int64), axis=1)
  if not (np.all(np.isfinite(target_scores)) and np.all(np.isfinite(negative_scores))):
    raise ValueError("retrieval scores contain NaN or inf")
  return np.sum(negative_scores > target_scores[:, None], axis=1)


def retrieval_metrics(ranks: np.ndarray, ks: Sequence[int] = RETRIEVAL_KS) -> dict:
  """HR@K, NDCG@K and MRR from 0-based target ranks."""
  ranks = np.asarray(ranks, dtype=np.float64)
  metrics = {}
  for k in ks:
    hit = ranks < k
    metrics[f"hr@{k}"] = float(np.mean(hit))
    metrics[f"ndcg@{k}"] = float(np.mean(hit / np.log2(ranks + 2.0)))
  metrics["mrr"] = float(np.mean(1.0 / (ranks + 1.0)))
  metrics["num_users"] = int(len(ranks))
  return metrics


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve; tied scores count one half.

  Returns NaN when either class is empty, so a missing outcome is visible
  rather than silently reported as chance.
  """
  scores = np.asarray(scores, dtype=np.float64).ravel()
  labels = np.asarray(labels, dtype=bool).ravel()
  num_pos = int(labels.sum())
  num_neg = len(labels) - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(len(scores), dtype=np.float64)
  # Average 1-based ranks over runs of equal scores (Mann-Whitney U).
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  mean_rank = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(mean_rank, counts)
  u_stat = ranks[labels].sum() - num_pos * (num_pos + 1) / 2.0
  return float(u_stat / (num_pos * num_neg))


def slate_ndcg(scores: np.ndarray, gains: np.ndarray, valid: np.ndarray, k: int = 5) -> float:
  """Mean NDCG@k of slates ordered by descending score.

  Args:
    scores: [S, C] predicted scores.
    gains: [S, C] graded relevance (for example none 0, click 1, save 2).
    valid: [S, C] bool, false on padding.
    k: cut-off.

  Returns:
    The mean over slates with at least one positive gain (a slate with no
    gain has no ideal ordering and is left out, as in common practice).
  """
  scores = np.where(valid, np.asarray(scores, dtype=np.float64), -np.inf)
  gains = np.where(valid, np.asarray(gains, dtype=np.float64), 0.0)
  discounts = 1.0 / np.log2(np.arange(k) + 2.0)
  # Stable sort on the negated score: ties keep slate order, deterministically.
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  dcg = np.sum(np.take_along_axis(gains, order, axis=1) * discounts[: order.shape[1]], axis=1)
  ideal = -np.sort(-gains, axis=1)[:, :k]
  idcg = np.sum(ideal * discounts[: ideal.shape[1]], axis=1)
  has_gain = idcg > 0
  if not np.any(has_gain):
    return float("nan")
  return float(np.mean(dcg[has_gain] / idcg[has_gain]))


def unordered_recall(lists: np.ndarray, future: np.ndarray) -> dict[str, float]:
  """PinRec's unordered recall: the generated lists' union against the user's future items.

  Args:
    lists: [U, T, K] item ids, the top-K of each of T generated query vectors.
    future: [U, F] the user's future item ids, 0-padded.

  Returns:
    `recall`: mean over users of the share of their distinct future items
    found in any list; `hit_rate`: share of users with at least one found.
  """
  recalls, hits = [], []
  for row, targets in zip(lists, future, strict=True):
    wanted = set(targets[targets > 0].tolist())
    if not wanted:
      continue
    found = wanted & set(row.ravel().tolist())
    recalls.append(len(found) / len(wanted))
    hits.append(bool(found))
  return {"recall": float(np.mean(recalls)), "hit_rate": float(np.mean(hits))}


def list_diversity(lists: np.ndarray, item_vectors: np.ndarray, num_items: int) -> dict[str, float]:
  """How varied the retrieved items are, within and across users.

  Args:
    lists: [U, M] item ids retrieved per user (duplicates inside a row count once).
    item_vectors: [N + 1, D] unit item vectors (the model's).
    num_items: catalogue size N.

  Returns:
    `unique_share`: distinct items over all (user, distinct item) entries;
    `coverage`: distinct items over the catalogue; `intra_list_distance`:
    mean over users of the mean pairwise cosine distance of their items.
  """
  rows = [np.unique(row[row > 0]) for row in lists]
  distinct = np.unique(np.concatenate(rows))
  distances = []
  for row in rows:
    if len(row) < 2:
      continue
    vectors = item_vectors[row]
    cosine = vectors @ vectors.T
    pairs = len(row) * (len(row) - 1)
    distances.append(float((pairs - (cosine.sum() - np.trace(cosine))) / pairs))
  return {
    "unique_share": len(distinct) / sum(len(row) for row in rows),
    "coverage": len(distinct) / num_items,
    "intra_list_distance": float(np.mean(distances)),
  }
