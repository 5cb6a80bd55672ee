"""Approximate search against exact search: recall@K and queries per second.

The synthetic catalogue is a Gaussian mixture on the unit sphere: cluster
centres uniform on the sphere, cluster sizes Zipf-distributed (a few large
topics, a long tail), each item its centre plus isotropic noise, normalised.
Queries are drawn from the same mixture, clusters picked by the same
popularity: users mostly ask near popular topics, as model queries do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
from absl import logging
from usearch.index import MetricKind, search

from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig

_GENERATE_CHUNK = 100_000  # items generated at once, to bound float64 temporaries


def clustered_catalogue(
  num_items: int,
  dim: int,
  num_clusters: int,
  noise: float,
  num_queries: int,
  seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """([N + 1, D] unit item vectors with row 0 zero, [Q, D] unit queries) of the mixture.

  Args:
    num_items: N.
    dim: D.
    num_clusters: mixture components.
    noise: norm of the expected noise vector added to a unit centre (per-dimension
      standard deviation noise / sqrt(D)); 1.0 puts a typical item at cosine ~0.7
      from its centre and ~0.5 from its cluster's other items.
    num_queries: Q.
    seed: the generator's seed.
  """
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_clusters, dim))
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  popularity = 1.0 / np.arange(1, num_clusters + 1)
  popularity /= popularity.sum()
  scale = noise / np.sqrt(dim)

  def draw(count: int) -> np.ndarray:
    points = centres[rng.choice(num_clusters, count, p=popularity)]
    points = points + scale * rng.normal(size=(count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)

  items = np.zeros((num_items + 1, dim), np.float32)
  for start in range(1, num_items + 1, _GENERATE_CHUNK):
    stop = min(start + _GENERATE_CHUNK, num_items + 1)
    items[start:stop] = draw(stop - start)
  return items, draw(num_queries)


@dataclasses.dataclass(frozen=True)
class RecallPoint:
  """Approximate search at one `expansion_search` against exact search."""

  expansion_search: int
  recall: float  # mean |approximate top K ∩ exact top K| / K
  queries_per_second: float
  speedup_over_exact: float  # queries_per_second / the exact search's


@dataclasses.dataclass(frozen=True)
class RecallReport:
  """An index's recall/QPS curve on one catalogue, with the exact baselines."""

  catalogue: str
  num_items: int
  dim: int
  num_queries: int
  k: int
  index: IndexConfig  # expansion_search is the config's; the curve sweeps it
  build_seconds: float
  exact_queries_per_second: float  # usearch's exhaustive search, f32 vectors, all cores
  blas_queries_per_second: float  # one [Q, D] @ [D, N] product + top-K selection, same vectors
  points: tuple[RecallPoint, ...]


def _blas_top_k(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
  """Exact top-K item ids (1..N) by inner product, as dense matrix products.

  Queries go in chunks: a [Q, N] score matrix of a million items would need gigabytes.
  """
  chunk = max(1, _GENERATE_CHUNK * 100 // len(items))
  parts = []
  for start in range(0, len(queries), chunk):
    scores = queries[start : start + chunk] @ items[1:].T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
    parts.append(np.take_along_axis(top, order, 1) + 1)
  return np.concatenate(parts)


def measure_recall(
  catalogue: str,
  items: np.ndarray,
  queries: np.ndarray,
  config: IndexConfig,
  k: int,
  expansions: Sequence[int],
) -> RecallReport:
  """Builds an index of `items` with `config`, then sweeps `expansions` against exact search.

  Args:
    catalogue: a name for logs and the report.
    items: [N + 1, D] unit vectors, row 0 the padding item (not indexed).
    queries: [Q, D] unit queries.
    config: the index's storage and graph settings.
    k: K of recall@K.
    expansions: `expansion_search` values to measure.
  """
  num_items = len(items) - 1
  queries = np.ascontiguousarray(queries, np.float32)
  logging.info("%s: building the index of %d items (%s)", catalogue, num_items, config)
  marks = {"next": 0.0}
  start = time.perf_counter()

  def progress(done: int, total: int) -> None:
    if done / total >= marks["next"] or done == total:
      logging.info(
        "%s: %d / %d items indexed (%.0f s)", catalogue, done, total, time.perf_counter() - start
      )
      marks["next"] = done / total + 0.1

  index = store.build(items, config, progress)
  build_seconds = time.perf_counter() - start

  start = time.perf_counter()
  exact = search(items[1:], queries, k, MetricKind.IP, exact=True)
  exact_qps = len(queries) / (time.perf_counter() - start)
  truth = np.asarray(exact.keys).reshape(len(queries), k) + 1
  start = time.perf_counter()
  blas = _blas_top_k(items, queries, k)
  blas_qps = len(queries) / (time.perf_counter() - start)
  # Ties aside, the two exact searches agree; a low figure would mean the truth is wrong.
  agreement = np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, blas, strict=True)])
  if agreement < 0.999:
    raise RuntimeError(f"{catalogue}: usearch and BLAS exact top-{k} agree on only {agreement:.4f}")
  logging.info("%s: exact %.0f q/s (usearch), %.0f q/s (BLAS)", catalogue, exact_qps, blas_qps)

  points = []
  for expansion in expansions:
    index.expansion_search = expansion
    start = time.perf_counter()
    found = np.asarray(index.search(queries, k).keys).reshape(len(queries), k)
    qps = len(queries) / (time.perf_counter() - start)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))
    points.append(RecallPoint(expansion, recall, qps, qps / exact_qps))
    logging.info(
      "%s: ef %d recall@%d %.4f, %.0f q/s (%.1fx exact)",
      catalogue,
      expansion,
      k,
      recall,
      qps,
      qps / exact_qps,
    )
  return RecallReport(
    catalogue=catalogue,
    num_items=num_items,
    dim=items.shape[1],
    num_queries=len(queries),
    k=k,
    index=config,
    build_seconds=build_seconds,
    exact_queries_per_second=exact_qps,
    blas_queries_per_second=blas_qps,
    points=tuple(points),
  )
