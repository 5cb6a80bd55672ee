"""Items as features in the synthetic world: noisy content vectors, cold items, their report."""

import dataclasses
import math
import warnings

import numpy as np
import pytest

from experiments.configs import synthetic as synthetic_configs
from unipinrec.config import from_mapping
from unipinrec.data.dataset import DataConfig, prepare_data
from unipinrec.data.synthetic import SyntheticConfig, generate_world
from unipinrec.evaluation import evaluate, metrics
from unipinrec.evaluation.cold_items import cold_warm_reports

TINY = {"num_users": 200, "num_items": 300, "num_topics": 5, "requests_per_user": 20}
TINY_WORLD = SyntheticConfig(**TINY, policy_pool=100, seed=1)


def _logs_equal(a, b) -> None:
  for field in dataclasses.fields(a):
    np.testing.assert_array_equal(
      np.asarray(getattr(a, field.name)), np.asarray(getattr(b, field.name)), field.name
    )


@pytest.fixture(scope="module")
def cold_data():
  """`synthetic.py:cold_items` on a tiny world."""
  data = from_mapping(synthetic_configs.get_config("cold_items").to_dict()).data
  tiny = dataclasses.replace(data.synthetic, **TINY, policy_pool=100)
  return prepare_data(dataclasses.replace(data, synthetic=tiny), max_length=8, seed=0)


def test_content_is_the_truth_mapped_linearly_plus_noise_at_the_given_ratio():
  with_content = dataclasses.replace(TINY_WORLD, content_dim=16)
  exact = generate_world(dataclasses.replace(with_content, content_noise=0.0))
  noisy = generate_world(dataclasses.replace(with_content, content_noise=0.5))
  plain = generate_world(TINY_WORLD)
  assert plain.item_content is None
  _logs_equal(plain.logs, noisy.logs)  # content draws from a stream of its own
  np.testing.assert_array_equal(generate_world(noisy.config).item_content, noisy.item_content)
  assert noisy.item_content.shape == (301, 16) and noisy.item_content.dtype == np.float32
  assert not noisy.item_content[0].any() and not exact.item_content[0].any()
  truth = np.concatenate([exact.item_vectors, exact.item_quality[:, None]], axis=1)
  signal = exact.item_content.astype(np.float64)
  fit, *_ = np.linalg.lstsq(truth, signal, rcond=None)
  np.testing.assert_allclose(truth @ fit, signal, atol=1e-5)
  # The noise is the same draw at every ratio: the difference is the noise itself.
  noise = noisy.item_content.astype(np.float64) - signal
  ratio = np.sqrt(np.mean(np.sum(noise[1:] ** 2, 1)) / np.mean(np.sum(signal[1:] ** 2, 1)))
  assert abs(ratio - 0.5) < 0.03


def test_cold_items_need_their_viewers():
  with pytest.raises(ValueError, match="cold_item_viewers"):
    generate_world(dataclasses.replace(TINY_WORLD, cold_item_fraction=0.2))


def test_cold_items_never_reach_training_users(cold_data):
  cold, logs = cold_data.cold_items, cold_data.logs
  assert cold.shape == (301,) and not cold[0] and cold.sum() == 60
  held_out = np.zeros(logs.num_users, dtype=bool)
  held_out[cold_data.eval_users] = True
  action_users = np.repeat(np.arange(logs.num_users), np.diff(logs.action_offsets))
  slate_users = np.repeat(np.arange(logs.num_users), np.diff(logs.slate_offsets))
  assert not cold[logs.action_items[~held_out[action_users]]].any()
  assert not cold[logs.slate_items[~held_out[slate_users]]].any()
  for name in ("items", "slate_items"):
    assert not cold[cold_data.train_examples[name]].any(), name
  # Held-out users are shown every item, cold ones among them, and some retrieve one next.
  assert cold[logs.slate_items[held_out[slate_users]]].any()
  assert cold[cold_data.eval_examples.retrieval_targets].any()


def test_oracle_scores_cold_items_zero_only_for_training_users(cold_data):
  world, cold = cold_data.world, cold_data.cold_items
  first_requests = world.logs.slate_offsets[:-1]
  held_out = np.isin(np.arange(world.logs.num_users), cold_data.eval_users)
  train_scores = world.oracle_retrieval_scores(first_requests[~held_out][:20])
  eval_scores = world.oracle_retrieval_scores(first_requests[held_out][:20])
  assert np.all(train_scores[:, cold] == 0.0)
  assert np.all(eval_scores[:, cold] > 0.0)  # before a first action nothing is banned


def test_cold_items_variant_carries_content_features(cold_data):
  features = cold_data.item_features
  assert features.shapes.content_dim == 32 and features.shapes.numeric_dim == 0
  assert features.categorical == () and features.numeric.shape == (301, 0)
  np.testing.assert_array_equal(features.content, cold_data.world.item_content)
  np.testing.assert_array_equal(features.has_features, np.arange(301) > 0)


def test_without_cold_items_or_content_prepare_data_keeps_todays_world():
  data = prepare_data(DataConfig(synthetic=TINY_WORLD), max_length=8, seed=0)
  assert data.cold_items is None and data.item_features is None
  _logs_equal(data.logs, generate_world(TINY_WORLD).logs)


def test_cold_and_warm_metrics_are_the_subsets_and_average_to_the_whole():
  ranks = np.array([0, 3, 12, 60, 250, 1, 9, 400])
  targets = np.array([5, 2, 7, 3, 2, 9, 4, 1])
  cold_items = np.zeros(10, dtype=bool)
  cold_items[[2, 9]] = True  # the targets of rows 1, 4 and 5
  report = cold_warm_reports(ranks, targets, cold_items)
  cold, warm = report["retrieval_cold"], report["retrieval_warm"]
  assert (cold["num_users"], warm["num_users"]) == (3, 5)
  assert cold["hr@10"] == pytest.approx(2 / 3) and warm["hr@10"] == pytest.approx(2 / 5)
  assert warm["hr@50"] == pytest.approx(3 / 5) and warm["hr@200"] == pytest.approx(4 / 5)
  assert cold["ndcg@10"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(3)) / 3)
  assert warm["ndcg@10"] == pytest.approx((1 + 1 / math.log2(11)) / 5)
  assert cold["mrr"] == pytest.approx((1 / 4 + 1 / 251 + 1 / 2) / 3)
  for side, rows in ((cold, [1, 4, 5]), (warm, [0, 2, 3, 6, 7])):
    subset = ranks[rows].astype(np.float64)
    for k in metrics.RETRIEVAL_KS:
      assert side[f"hr@{k}"] == pytest.approx(np.mean(subset < k))
      assert side[f"ndcg@{k}"] == pytest.approx(np.mean((subset < k) / np.log2(subset + 2)))
  whole = metrics.retrieval_metrics(ranks)
  assert whole.pop("num_users") == 8
  for key, value in whole.items():
    assert (3 * cold[key] + 5 * warm[key]) / 8 == pytest.approx(value), key


def test_a_side_without_targets_reports_nan_quietly():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    report = cold_warm_reports(np.array([4, 0]), np.array([1, 2]), np.zeros(3, dtype=bool))
  assert report["retrieval_cold"]["num_users"] == 0
  assert math.isnan(report["retrieval_cold"]["hr@10"])
  assert report["retrieval_warm"]["hr@10"] == 1.0


def test_popularity_and_oracle_report_cold_and_warm_targets(cold_data):
  examples, names = cold_data.eval_examples, cold_data.logs.outcome_names
  popularity = evaluate.evaluate_popularity(
    examples, cold_data.item_log_frequency, names, cold_items=cold_data.cold_items
  )
  oracle = evaluate.evaluate_oracle(cold_data.world, examples, names)
  num_cold = int(cold_data.cold_items[examples.retrieval_targets].sum())
  for report in (popularity, oracle):
    cold, warm, whole = report["retrieval_cold"], report["retrieval_warm"], report["retrieval"]
    assert (cold["num_users"], warm["num_users"]) == (num_cold, whole["num_users"] - num_cold)
    weighted = cold["ndcg@10"] * cold["num_users"] + warm["ndcg@10"] * warm["num_users"]
    assert weighted / whole["num_users"] == pytest.approx(whole["ndcg@10"])
  # Never trained on, a cold item has the least popularity: below every warm one with actions.
  assert popularity["retrieval_cold"]["hr@50"] == 0.0
  assert "retrieval_cold" not in evaluate.evaluate_popularity(
    examples, cold_data.item_log_frequency, names
  )
