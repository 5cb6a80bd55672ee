"""Retrieval ranks from a usearch index of the item vectors, and its recall of the exact top.

For catalogues where scoring every item is too slow: each user's target is looked up in the
index's top items instead. A target the index does not return has no rank (infinite), so it
is a miss at every K and adds nothing to MRR: the figures are those of what the index
retrieves, the serving path's, and `recall` says how far they are from the exact ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from usearch.index import Index

from unipinrec.evaluation import catalogue, metrics
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig

RECALL_KS = (10, 100)


def _searched_ranks(found: np.ndarray, targets: np.ndarray, removed: np.ndarray) -> np.ndarray:
  """[U] float position of each target among its row of `found` where `removed` is false;
  inf where the row lacks it."""
  kept = ~removed
  before = np.cumsum(kept, axis=1) - kept  # kept items ahead of each position
  hit = found == targets[:, None]
  ranks = np.full(len(targets), np.inf)
  rows, positions = np.nonzero(hit)
  ranks[rows] = before[rows, positions]
  return ranks


def ann_ranks(
  index: Index,
  exact: bool,
  queries: np.ndarray,
  targets: np.ndarray,
  seen: Sequence[np.ndarray],
  depth: int = max(metrics.RETRIEVAL_KS),
) -> dict[str, np.ndarray]:
  """ "retrieval" (filtered) and "retrieval_unfiltered" ranks from the index's top items.

  Args:
    index: usearch index of items 1..N by inner product.
    exact: search exhaustively rather than walk the graph.
    queries: [U, S] the users' queries.
    targets: [U] target item ids.
    seen: per user, the items the filtered protocol removes (never the target).
    depth: the number of candidates left after the removal: the largest K reported.

  Returns:
    [U] float ranks, inf where the target is not among the candidates.
  """
  targets = np.asarray(targets, np.int64)
  distinct_seen = [
    np.setdiff1d(items, [target]) for items, target in zip(seen, targets, strict=True)
  ]
  # Each user gets `depth` candidates beyond its seen items; a power of two groups the users.
  wanted = depth + np.asarray([len(items) for items in distinct_seen], np.int64)
  counts = 2 ** np.ceil(np.log2(np.maximum(wanted, 1))).astype(np.int64)
  ranks = {name: np.full(len(targets), np.inf) for name in ("retrieval", "retrieval_unfiltered")}
  for count in np.unique(counts):
    rows = np.flatnonzero(counts == count)
    found = store.search(index, queries[rows], int(count), exact)
    removed = np.stack(
      [np.isin(found[i], distinct_seen[row]) for i, row in enumerate(rows)]
    ).reshape(found.shape)
    ranks["retrieval"][rows] = _searched_ranks(found, targets[rows], removed)
    ranks["retrieval_unfiltered"][rows] = _searched_ranks(
      found, targets[rows], np.zeros(found.shape, bool)
    )
  return ranks


def ann_recall(
  index: Index,
  config: IndexConfig,
  scorer: catalogue.DotScorer,
  chunks: catalogue.EvalConfig,
  ks: Sequence[int] = RECALL_KS,
) -> dict:
  """Recall@K of the index's top items against the exact top items (nothing removed), per K.

  Args:
    index: usearch index of the scorer's items 1..N.
    config: the index's settings, reported beside the figures.
    scorer: the queries of the sampled users.
    chunks: the exact top items' chunk sizes.
    ks: the Ks.
  """
  num_items = len(scorer.items) - 1
  depth = min(max(ks), num_items)
  truth = catalogue.top_items(scorer, num_items, len(scorer.queries), depth, chunks)
  found = store.search(index, scorer.queries, depth, config.exact)
  report = {}
  for k in ks:
    k = min(k, num_items)
    shared = [len(np.intersect1d(a[:k], b[:k])) for a, b in zip(found, truth, strict=True)]
    report[f"recall@{k}"] = float(np.mean(shared) / k)
  return {**report, "num_users": len(scorer.queries), "index": dataclasses.asdict(config)}


def drawn_ranks(
  scorer: catalogue.DotScorer,
  targets: np.ndarray,
  negatives: np.ndarray,
  chunks: catalogue.EvalConfig,
) -> np.ndarray:
  """[U] sampled-100 ranks (`metrics.sampled_ranks`), each user's few items scored exactly."""
  if scorer.history_items is not None:
    raise ValueError("a history bias is not searched by an index: evaluate it exactly")
  drawn = np.concatenate([np.asarray(targets)[:, None], negatives], axis=1)
  columns = np.broadcast_to(np.arange(1, drawn.shape[1]), negatives.shape)
  parts = []
  for first in range(0, len(drawn), chunks.user_chunk):
    rows = slice(first, first + chunks.user_chunk)
    vectors = scorer.vectors_of(drawn[rows])
    scores = np.einsum("us,ums->um", scorer.queries[rows], vectors) / np.float32(scorer.temperature)
    parts.append(metrics.sampled_ranks(scores, np.zeros(len(scores), np.int64), columns[rows]))
  return np.concatenate(parts)
