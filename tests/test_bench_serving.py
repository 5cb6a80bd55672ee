"""The serving benchmark's arithmetic, its FLOP accounting, and the ANN recall measurement."""

import numpy as np
import pytest

from unipinrec.bench import recall
from unipinrec.bench import serving as benchmark
from unipinrec.index.manifest import IndexConfig
from unipinrec.model.config import ModelConfig


def _path(flops, ranking_flops, model_ms, ranking_ms, latency_ms, users_per_second):
  return {
    "flops": flops,
    "ranking_flops": ranking_flops,
    "model_ms_p50": model_ms,
    "ranking_ms_p50": ranking_ms,
    "latency_ms_p50": latency_ms,
    "users_per_second": users_per_second,
  }


def test_speedups_and_checks_follow_from_the_figures():
  results = {
    "a_cache": _path(10.0, 4.0, 100.0, 40.0, 110.0, 80.0),
    "b_recompute": _path(16.0, 10.0, 150.0, 90.0, 160.0, 50.0),
    "c_separate": _path(16.0, 10.0, 120.0, 70.0, 130.0, 60.0),
  }
  ratios = benchmark.speedups(results)
  b = ratios["b_recompute"]
  assert b["flop_ratio"] == pytest.approx(1.6)
  assert b["model_speedup"] == pytest.approx(1.5)
  assert b["model_share_of_ceiling"] == pytest.approx(1.5 / 1.6)
  assert b["ranking_flop_ratio"] == pytest.approx(2.5)
  assert b["ranking_speedup"] == pytest.approx(2.25)
  assert b["end_to_end_speedup"] == pytest.approx(160 / 110)
  assert b["users_per_second_ratio"] == pytest.approx(1.6)
  assert ratios["c_separate"]["model_share_of_ceiling"] == pytest.approx(1.2 / 1.6)

  checks = benchmark.checks({1000: ratios}, {})
  assert checks["L1000_b_recompute_model_share_of_ceiling>=0.85"]
  assert checks["L1000_b_recompute_ranking_share_of_ceiling>=0.85"]
  assert not checks["L1000_c_separate_model_share_of_ceiling>=0.85"]
  assert checks["L1000_ranking_on_cache>=2x_recompute"]
  assert not checks["L1000_a_users_per_second>=1.5x_c"]  # 80 / 60 = 1.33


def test_summary_medians_percentiles_and_rates():
  requests = [(0.010, 0.001, 0.020), (0.030, 0.002, 0.010), (0.020, 0.003, 0.030)]
  summary = benchmark._summary(requests, users=4)
  assert summary["model_ms_p50"] == pytest.approx(40.0)  # model times 30, 40, 50 ms
  assert summary["latency_ms_p50"] == pytest.approx(42.0)  # 31, 42, 53 ms
  assert summary["latency_ms_p99"] == pytest.approx(1e3 * np.percentile([0.031, 0.042, 0.053], 99))
  assert summary["users_per_second"] == pytest.approx(4 / 0.042)
  assert summary["search_ms_p50"] == pytest.approx(2.0)


def test_clustered_catalogue_is_unit_deterministic_and_clustered():
  items, queries = recall.clustered_catalogue(2000, 16, 20, 1.0, 50, seed=3)
  again, _ = recall.clustered_catalogue(2000, 16, 20, 1.0, 50, seed=3)
  np.testing.assert_array_equal(items, again)
  assert items.shape == (2001, 16) and queries.shape == (50, 16)
  assert not items[0].any()
  np.testing.assert_allclose(np.linalg.norm(items[1:], axis=1), 1.0, atol=1e-5)
  # Clustered: each query's best item is far closer than a random item is.
  best = (queries @ items[1:].T).max(axis=1)
  assert best.mean() > 0.7 and abs((queries @ items[1:].T).mean()) < 0.2


def test_recall_against_exact_search():
  items, queries = recall.clustered_catalogue(3000, 16, 30, 1.0, 40, seed=0)
  config = IndexConfig(dtype="f32", connectivity=16, expansion_add=64, expansion_search=64)
  report = recall.measure_recall("tiny", items, queries, config, k=10, expansions=(16, 512))
  low, high = report.points
  assert 0.0 <= low.recall <= high.recall <= 1.0 and high.recall >= 0.95
  assert report.exact_queries_per_second > 0 and report.num_items == 3000
  assert high.speedup_over_exact == pytest.approx(
    high.queries_per_second / report.exact_queries_per_second
  )


@pytest.mark.slow  # compiles four serving stages of a model: about 15 s on an idle 2-core machine
def test_path_flops_count_what_each_path_computes():
  config = ModelConfig(
    num_items=200,
    num_outcomes=2,
    embed_dim=8,
    action_dim=8,
    mlp_dim=16,
    head_hidden_dim=8,
    dropout_rate=0.0,
    offsets_seconds=(0.0,),
    relative_position_buckets=0,
    exclusive_outcomes=False,
  )
  bench = benchmark.BenchConfig(num_candidates=16, users_per_request=2, requests=2, warmup=1)
  results = benchmark.benchmark_paths(config, IndexConfig(), length=24, bench=bench)
  a, b, c = (results[p] for p in benchmark.PATHS)
  assert b["ranking_flops"] == c["ranking_flops"] and b["retrieval_flops"] == c["retrieval_flops"]
  # Ranking again encodes the history; on the cache it does not.
  assert b["ranking_flops"] > 1.2 * a["ranking_flops"]
  assert a["retrieval_flops"] == pytest.approx(b["retrieval_flops"], rel=0.05)
  for r in (a, b, c):
    assert r["flops"] == r["retrieval_flops"] + r["ranking_flops"]
    assert len(r["seconds"]) == 2 and r["candidates_per_user"] == 16
    total = np.median([sum(s) for s in r["seconds"]])
    assert r["users_per_second"] == pytest.approx(2 / total)
