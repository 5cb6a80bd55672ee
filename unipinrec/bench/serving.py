"""The serving benchmark: three serving paths timed in one run, their FLOPs, and ANN recall/QPS.

Paths, for a request of B users, each with a full history of length L and K candidates:
  (a) cache:    one model encodes the histories (keeping the KV cache) and builds the
                queries; the index returns K candidates; ranking reads the cache.
  (b) recompute: the same model, but ranking encodes the histories again.
  (c) separate: a retrieval model encodes and builds the queries; a ranking model of
                the same size encodes the histories again and ranks.
Each request is timed in three stages: retrieval (jitted, until the queries are on
the host), search (usearch, host), ranking (jitted, until the scores are ready).
"Model" times are retrieval + ranking; "end-to-end" adds the search. The paths
take turns request by request, so a change in the machine's load hits all three.

Weights are freshly initialised at each L (timing does not depend on training);
the catalogue size, outcomes, surfaces, widths and index settings are the trained
run's. FLOPs are XLA's cost analysis of each compiled stage (`compiled_flops`):
their ratio between paths is the ceiling of the model-time speedup.

ANN: recall@K of the run's index settings against exact search, with queries
per second, on the trained catalogue (queries: the model's, for held-out users)
and on a synthetic clustered catalogue (`bench.recall.clustered_catalogue`).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from unipinrec.bench import recall
from unipinrec.bench.train_step import compiled_flops
from unipinrec.export.checkpoint import restore_serving_model
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig
from unipinrec.model import inference
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.records import git_commit, write_json_atomic
from unipinrec.train.state import example_batch, initial_params
from unipinrec.types import Histories

RESULTS_FILE = "bench_serving.json"
PATHS = ("a_cache", "b_recompute", "c_separate")
_DISTINCT_BATCHES = 4  # request batches cycled through


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """Sizes of the serving benchmark."""

  lengths: tuple[int, ...] = (200, 1000)  # history lengths L timed
  num_candidates: int = 256  # K ranked per user
  users_per_request: int = 8  # B
  requests: int = 40  # timed requests per path and length
  warmup: int = 3  # untimed requests per path first
  ann_items: int = 1_000_000  # synthetic catalogue size
  ann_clusters: int = 1000
  ann_noise: float = 1.0  # see clustered_catalogue
  ann_dim: int = 64
  ann_queries: int = 1000
  recall_k: int = 100
  expansions: tuple[int, ...] = (64, 128, 256, 512)  # expansion_search values swept
  seed: int = 0


def _init(model: UniPinRec, seed: int):
  return initial_params(model, example_batch(model, 1, 1, 1), seed)


def _histories(rng: np.random.Generator, config: ModelConfig, users: int, length: int):
  """Full-length random histories, with request times after their last action."""
  outcomes = rng.random((users, length, config.num_outcomes)) < 0.5
  outcomes[..., 0] = True
  times = np.cumsum(rng.integers(10, 3600, (users, length)), axis=1).astype(np.float32)
  histories = Histories(
    items=rng.integers(1, config.num_items + 1, (users, length)).astype(np.int32),
    outcomes=outcomes,
    times=times,
    surfaces=rng.integers(0, config.num_surfaces, (users, length)).astype(np.int32),
    lengths=np.full(users, length, np.int32),
  )
  request_times = times[:, -1] + 60.0
  surfaces = np.zeros(users, np.int32)
  return jax.device_put((histories, request_times, surfaces, np.zeros(users, np.int32)))


def _in_memory_index(serving: ServingModel, config: IndexConfig) -> store.ItemIndex:
  vectors = serving.item_vectors()
  return store.ItemIndex(store.build(vectors, config), vectors, serving.manifest(config), "")


def _summary(requests: list[tuple[float, float, float]], users: int) -> dict:
  """Per-request stage times (retrieval, search, ranking) -> medians, p50/p99, users/s."""
  retrieval, search, ranking = (np.array(x) for x in zip(*requests, strict=True))
  model, total = retrieval + ranking, retrieval + search + ranking
  return {
    "retrieval_ms_p50": 1e3 * float(np.median(retrieval)),
    "search_ms_p50": 1e3 * float(np.median(search)),
    "ranking_ms_p50": 1e3 * float(np.median(ranking)),
    "model_ms_p50": 1e3 * float(np.median(model)),
    "model_ms_p99": 1e3 * float(np.percentile(model, 99)),
    "latency_ms_p50": 1e3 * float(np.median(total)),
    "latency_ms_p99": 1e3 * float(np.percentile(total, 99)),
    "model_users_per_second": users / float(np.median(model)),
    "users_per_second": users / float(np.median(total)),
    "seconds": [list(r) for r in requests],
  }


def benchmark_paths(base: ModelConfig, index_config: IndexConfig, length: int, bench: BenchConfig):
  """Times paths (a), (b) and (c) at history length `length`; returns a dict per path."""
  config = dataclasses.replace(base, max_length=length)
  model = UniPinRec(config)
  unified, retrieval_only, ranking_only = (_init(model, bench.seed + i) for i in range(3))
  served = {
    name: ServingModel(model, params, 0, "bench", ())
    for name, params in [("unified", unified), ("retrieval", retrieval_only)]
  }
  indexes = {name: _in_memory_index(s, index_config) for name, s in served.items()}
  rng = np.random.default_rng(bench.seed)
  batches = [
    _histories(rng, config, bench.users_per_request, length) for _ in range(_DISTINCT_BATCHES)
  ]
  k = min(bench.num_candidates, config.num_items)
  histories, request_times, surfaces, conditions = batches[0]
  candidates = jnp.ones((bench.users_per_request, k), jnp.int32)

  logging.info("L=%d: compiling the serving stages", length)
  keeping = inference.retrieve(model)
  retrieve_cache = jax.jit(keeping).lower(unified, histories, conditions).compile()
  retrieve = jax.jit(inference.retrieve(model, keep_cache=False))
  retrieve = retrieve.lower(unified, histories, conditions).compile()
  cache = jax.eval_shape(keeping, unified, histories, conditions).cache
  rank_cache = jax.jit(inference.rank_on_cache(model))
  rank_cache = rank_cache.lower(
    unified, cache, histories.times, candidates, request_times, surfaces
  ).compile()
  rank_again = jax.jit(inference.rank_recomputed(model))
  rank_again = rank_again.lower(unified, histories, candidates, request_times, surfaces).compile()
  flops = {
    "a_cache": (compiled_flops(retrieve_cache), compiled_flops(rank_cache)),
    "b_recompute": (compiled_flops(retrieve), compiled_flops(rank_again)),
  }
  flops["c_separate"] = flops["b_recompute"]  # the same programs, other weights

  def request(path: str, batch) -> tuple[float, float, float]:
    histories, request_times, surfaces, conditions = batch
    start = time.perf_counter()
    if path == "a_cache":
      output = retrieve_cache(unified, histories, conditions)
    else:
      params = retrieval_only if path == "c_separate" else unified
      output = retrieve(params, histories, conditions)
    queries = np.asarray(output.queries)
    retrieved = time.perf_counter()
    index = indexes["retrieval" if path == "c_separate" else "unified"]
    candidates = jax.device_put(index.search(queries, k).astype(np.int32))
    searched = time.perf_counter()
    if path == "a_cache":
      scores = rank_cache(
        unified, output.cache, histories.times, candidates, request_times, surfaces
      )
    else:
      params = ranking_only if path == "c_separate" else unified
      scores = rank_again(params, histories, candidates, request_times, surfaces)
    jax.block_until_ready(scores)
    ranked = time.perf_counter()
    return retrieved - start, searched - retrieved, ranked - searched

  timings = {path: [] for path in PATHS}
  logging.info(
    "L=%d: %d warm-up and %d timed requests per path", length, bench.warmup, bench.requests
  )
  for i in range(bench.warmup + bench.requests):
    for path in PATHS:  # in turns, so that load changes hit every path alike
      seconds = request(path, batches[i % _DISTINCT_BATCHES])
      if i >= bench.warmup:
        timings[path].append(seconds)
  results = {}
  for path in PATHS:
    results[path] = {
      "max_length": length,
      "users_per_request": bench.users_per_request,
      "candidates_per_user": k,
      "retrieval_flops": flops[path][0],
      "ranking_flops": flops[path][1],
      "flops": sum(flops[path]),
      **_summary(timings[path], bench.users_per_request),
    }
    logging.info(
      "L=%d %s: model %.1f ms, end-to-end %.1f ms, %.1f users/s",
      length,
      path,
      results[path]["model_ms_p50"],
      results[path]["latency_ms_p50"],
      results[path]["users_per_second"],
    )
  return results


def speedups(results: dict) -> dict:
  """Each path against (a): FLOP ratio (the ceiling), measured speedups and their share of it."""
  base = results["a_cache"]
  ratios = {}
  for path in ("b_recompute", "c_separate"):
    other = results[path]
    flop_ratio = other["flops"] / base["flops"]
    model = other["model_ms_p50"] / base["model_ms_p50"]
    ranking_flop_ratio = other["ranking_flops"] / base["ranking_flops"]
    ranking = other["ranking_ms_p50"] / base["ranking_ms_p50"]
    ratios[path] = {
      "flop_ratio": flop_ratio,
      "model_speedup": model,
      "model_share_of_ceiling": model / flop_ratio,
      "end_to_end_speedup": other["latency_ms_p50"] / base["latency_ms_p50"],
      "ranking_flop_ratio": ranking_flop_ratio,
      "ranking_speedup": ranking,
      "ranking_share_of_ceiling": ranking / ranking_flop_ratio,
      "users_per_second_ratio": base["users_per_second"] / other["users_per_second"],
    }
  return ratios


def checks(lengths: dict, ann: dict) -> dict:
  """The issue's targets, each with its figure."""
  out = {}
  for length, ratios in lengths.items():
    for path, r in ratios.items():
      out[f"L{length}_{path}_model_share_of_ceiling>=0.85"] = r["model_share_of_ceiling"] >= 0.85
      out[f"L{length}_{path}_ranking_share_of_ceiling>=0.85"] = (
        r["ranking_share_of_ceiling"] >= 0.85
      )
  if 1000 in lengths:
    out["L1000_ranking_on_cache>=2x_recompute"] = (
      lengths[1000]["b_recompute"]["ranking_speedup"] >= 2
    )
    out["L1000_a_users_per_second>=1.5x_c"] = (
      lengths[1000]["c_separate"]["users_per_second_ratio"] >= 1.5
    )
  synthetic = ann.get("synthetic")
  if synthetic is not None:
    out["ann_recall@k>=0.95_at>=10x_exact_qps"] = any(
      p["recall"] >= 0.95 and p["speedup_over_exact"] >= 10 for p in synthetic["points"]
    )
  return out


def _model_queries(serving: ServingModel, history: dict, limit: int) -> np.ndarray:
  """[U, D] any-outcome queries of the first `limit` held-out users."""
  histories = Histories.from_fields({name: values[:limit] for name, values in history.items()})
  conditions = np.zeros(len(histories.items), np.int32)
  retrieve = jax.jit(inference.retrieve(serving.model, keep_cache=False))
  return np.asarray(retrieve(serving.params, histories, conditions).queries)


def run_benchmark(workdir: str, bench: BenchConfig) -> dict:
  """All measurements in one run; writes `workdir/bench_serving.json` and returns it."""
  start = time.time()
  serving, experiment = restore_serving_model(workdir)
  run = experiment.run
  lengths = {}
  path_results = {}
  for length in bench.lengths:
    path_results[length] = benchmark_paths(serving.model.config, run.index, length, bench)
    lengths[length] = speedups(path_results[length])
  ann = {}
  queries = _model_queries(
    serving, experiment.data.eval_examples.retrieval_history, bench.ann_queries
  )
  num_items = serving.model.config.num_items
  ann["trained"] = dataclasses.asdict(
    recall.measure_recall(
      "trained",
      serving.item_vectors(),
      queries,
      run.index,
      min(bench.recall_k, num_items),
      bench.expansions,
    )
  )
  if bench.ann_items:
    items, queries = recall.clustered_catalogue(
      bench.ann_items,
      bench.ann_dim,
      bench.ann_clusters,
      bench.ann_noise,
      bench.ann_queries,
      bench.seed,
    )
    ann["synthetic"] = dataclasses.asdict(
      recall.measure_recall(
        f"synthetic-{bench.ann_items}", items, queries, run.index, bench.recall_k, bench.expansions
      )
    )
  document = {
    "paths": {str(length): results for length, results in path_results.items()},
    "speedups": {str(length): ratios for length, ratios in lengths.items()},
    "ann": ann,
    "checks": checks(lengths, ann),
    "bench": dataclasses.asdict(bench),
    "index": dataclasses.asdict(run.index),
    "model": dataclasses.asdict(serving.model.config),
    "workdir": os.path.abspath(workdir),
    "checkpoint_step": serving.step,
    "git_commit": git_commit(),
    "devices": [str(d) for d in jax.devices()],
    "wall_seconds": time.time() - start,
  }
  write_json_atomic(os.path.join(workdir, RESULTS_FILE), document)
  return document


def format_table(document: dict) -> str:
  """The paths per length, the ratios against (a), the ANN curves, and the checks."""
  lines = [
    f"{'L':>5} {'path':<12} {'GFLOP/req':>9} {'retr ms':>8} {'search ms':>9} {'rank ms':>8} "
    f"{'model p50/p99 ms':>17} {'e2e p50/p99 ms':>15} {'users/s model':>13} {'users/s e2e':>11}"
  ]
  for length, results in document["paths"].items():
    for path, r in results.items():
      lines.append(
        f"{length:>5} {path:<12} {r['flops'] / 1e9:>9.2f} {r['retrieval_ms_p50']:>8.1f} "
        f"{r['search_ms_p50']:>9.1f} {r['ranking_ms_p50']:>8.1f} "
        f"{r['model_ms_p50']:>8.1f}/{r['model_ms_p99']:<8.1f} "
        f"{r['latency_ms_p50']:>7.1f}/{r['latency_ms_p99']:<7.1f} "
        f"{r['model_users_per_second']:>13.1f} {r['users_per_second']:>11.1f}"
      )
  lines += [
    "",
    f"{'L':>5} {'vs (a)':<12} {'FLOP ratio':>10} {'model x':>8} {'share':>6} {'e2e x':>6} "
    f"{'rank FLOP ratio':>15} {'rank x':>7} {'share':>6} {'(a)/(.) users/s':>15}",
  ]
  for length, ratios in document["speedups"].items():
    for path, r in ratios.items():
      lines.append(
        f"{length:>5} {path:<12} {r['flop_ratio']:>10.2f} {r['model_speedup']:>8.2f} "
        f"{r['model_share_of_ceiling']:>6.2f} {r['end_to_end_speedup']:>6.2f} "
        f"{r['ranking_flop_ratio']:>15.2f} {r['ranking_speedup']:>7.2f} "
        f"{r['ranking_share_of_ceiling']:>6.2f} {r['users_per_second_ratio']:>15.2f}"
      )
  lines += [
    "",
    f"{'catalogue':<18} {'items':>8} {'build s':>8} {'exact q/s':>9} {'BLAS q/s':>8} {'ef':>4} "
    f"{'recall':>7} {'q/s':>8} {'x exact':>7}",
  ]
  for report in document["ann"].values():
    for p in report["points"]:
      lines.append(
        f"{report['catalogue']:<18} {report['num_items']:>8} {report['build_seconds']:>8.1f} "
        f"{report['exact_queries_per_second']:>9.0f} {report['blas_queries_per_second']:>8.0f} "
        f"{p['expansion_search']:>4} {p['recall']:>7.4f} {p['queries_per_second']:>8.0f} "
        f"{p['speedup_over_exact']:>7.1f}"
      )
  lines += ["", "checks:"] + [
    f"  {'PASS' if ok else 'FAIL'} {name}" for name, ok in document["checks"].items()
  ]
  return "\n".join(lines)
