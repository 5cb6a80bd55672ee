"""`unipinrec/evaluation/metrics.py` against values worked out by hand (PROTOCOL.md definitions)."""

import math

import numpy as np
import pytest

from unipinrec import records
from unipinrec.evaluation import metrics

# Catalogue of N = 5 items; column 0 is padding. Column 0 holds a huge score for user 0 and NaN
# for user 1: neither may count, nor fail the finiteness check.
_SCORES = np.array(
  [
    [9.0, 0.5, 0.7, 0.5, 0.9, 0.1],
    [np.nan, 0.2, 0.2, 0.2, 0.2, 0.2],
    [0.0, 0.3, 0.8, 0.6, 0.4, 0.8],
  ]
)
_TARGETS = np.array([1, 3, 4])


class TestTargetRanks:
  def test_ties_do_not_count(self):
    # User 0, target 1 (0.5): strictly above are item 2 (0.7) and item 4 (0.9); item 3 ties at
    #   0.5 and column 0 (9.0) is padding -> rank 2.
    # User 1, target 3: every item ties at 0.2 -> rank 0.
    # User 2, target 4 (0.4): above are items 2 (0.8), 3 (0.6), 5 (0.8) -> rank 3.
    ranks = metrics.target_ranks(_SCORES, _TARGETS)
    np.testing.assert_array_equal(ranks, [2, 0, 3])
    assert ranks.dtype.kind == "i"

  def test_filter_removes_history_but_never_the_target(self):
    # User 0 excludes items 2 and 1; item 1 is the target and stays -> only item 4 is above: 1.
    # User 1 excludes nothing -> 0.
    # User 2 excludes 5, 3 and 4 (its own target) -> only item 2 (0.8) is above: 1.
    excluded = [np.array([2, 1]), np.array([], dtype=np.int64), [5, 3, 4]]
    ranks = metrics.target_ranks(_SCORES, _TARGETS, excluded)
    np.testing.assert_array_equal(ranks, [1, 0, 1])

  def test_filter_changes_only_the_rank_not_the_scores(self):
    scores = _SCORES.copy()
    metrics.target_ranks(scores, _TARGETS, [[2], [], [5]])
    np.testing.assert_array_equal(scores, _SCORES)

  def test_column_zero_is_never_a_candidate(self):
    # Whatever column 0 holds (above, below or not finite), the ranks are the same.
    expected = metrics.target_ranks(_SCORES, _TARGETS)
    for pad in (1e9, -1e9, np.inf, -np.inf, np.nan):
      scores = _SCORES.copy()
      scores[:, 0] = pad
      np.testing.assert_array_equal(metrics.target_ranks(scores, _TARGETS), expected)

  @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
  def test_non_finite_candidate_score_raises(self, bad):
    scores = _SCORES.copy()
    scores[2, 3] = bad
    with pytest.raises(ValueError):
      metrics.target_ranks(scores, _TARGETS)

  def test_nan_on_a_filtered_item_still_raises(self):
    # The protocol fails any NaN among items 1..N, filtered or not.
    scores = _SCORES.copy()
    scores[0, 2] = np.nan
    with pytest.raises(ValueError):
      metrics.target_ranks(scores, _TARGETS, [[2], [], []])


class TestRetrievalMetrics:
  RANKS = [0, 3, 12, 60, 250]

  def test_hand_computed(self):
    got = metrics.retrieval_metrics(self.RANKS)
    # Hits: rank < 10 -> {0, 3}; rank < 50 -> {0, 3, 12}; rank < 200 -> {0, 3, 12, 60}.
    # HR@10 = 2/5 = 0.4, HR@50 = 3/5 = 0.6, HR@200 = 4/5 = 0.8.
    # Gains 1 / log2(rank + 2):
    #   rank 0:  1 / log2(2)  = 1
    #   rank 3:  1 / log2(5)  = 1 / 2.321928094887362 = 0.43067655807339306
    #   rank 12: 1 / log2(14) = 1 / 3.807354922057604 = 0.26264953503719357
    #   rank 60: 1 / log2(62) = 1 / 5.954196310386875 = 0.16794877895704194
    # NDCG@10  = (1 + 0.43067655807339306) / 5                                = 0.28613531161467864
    # NDCG@50  = (1 + 0.43067655807339306 + 0.26264953503719357) / 5          = 0.33866521862211735
    # NDCG@200 = (1 + 0.43067655807339306 + 0.26264953503719357
    #             + 0.16794877895704194) / 5                                  = 0.37225497441352573
    # MRR = (1/1 + 1/4 + 1/13 + 1/61 + 1/251) / 5
    #     = (1 + 0.25 + 0.07692307692307693 + 0.01639344262295082 + 0.00398406374501992) / 5
    #     = 1.3473005832910476 / 5 = 0.2694601166582095
    expected = {
      "hr@10": 0.4,
      "ndcg@10": 0.28613531161467864,
      "hr@50": 0.6,
      "ndcg@50": 0.33866521862211735,
      "hr@200": 0.8,
      "ndcg@200": 0.37225497441352573,
      "mrr": 0.2694601166582095,
    }
    assert set(got) == set(expected) | {"num_users"}
    for key, value in expected.items():
      assert got[key] == pytest.approx(value, rel=1e-12, abs=0.0), key
    assert got["num_users"] == 5
    assert isinstance(got["num_users"], int)

  def test_boundary_rank_equal_to_k_is_a_miss(self):
    # rank 10 means ten items above: outside the top 10, inside the top 50.
    got = metrics.retrieval_metrics([10], ks=(10, 50))
    assert got["hr@10"] == 0.0
    assert got["ndcg@10"] == 0.0
    assert got["hr@50"] == 1.0
    # 1 / log2(12) = 1 / 3.584962500721156 = 0.27894294565112987
    assert got["ndcg@50"] == pytest.approx(0.27894294565112987, rel=1e-12)
    assert got["mrr"] == pytest.approx(1 / 11, rel=1e-12)

  def test_all_first(self):
    got = metrics.retrieval_metrics([0, 0, 0])
    for k in metrics.RETRIEVAL_KS:
      assert got[f"hr@{k}"] == 1.0
      assert got[f"ndcg@{k}"] == 1.0
    assert got["mrr"] == 1.0


def _brute_force_auc(scores, labels):
  """Pairwise definition: P(positive > negative) + P(tie) / 2, over every pair."""
  pos = scores[labels][:, None]
  neg = scores[~labels][None, :]
  wins = np.sum(pos > neg) + 0.5 * np.sum(pos == neg)
  return wins / (pos.size * neg.size)


class TestAuc:
  def test_hand_computed_with_ties(self):
    # Positives 0.4 and 0.8; negatives 0.1 and 0.4. Pairs (pos, neg):
    #   (0.4, 0.1) win 1, (0.4, 0.4) tie 1/2, (0.8, 0.1) win 1, (0.8, 0.4) win 1
    #   -> (1 + 0.5 + 1 + 1) / 4 = 3.5 / 4 = 0.875
    assert metrics.auc([0.1, 0.4, 0.4, 0.8], [0, 1, 0, 1]) == pytest.approx(0.875, rel=1e-12)

  def test_hand_computed_three_way_tie(self):
    # Positives 0.5, 0.5; negatives 0.5, 0.2, 0.9. Pairs per positive:
    #   vs 0.5 tie 1/2, vs 0.2 win 1, vs 0.9 loss 0 -> 1.5; two positives -> 3.0 over 6 pairs
    #   -> 0.5
    assert metrics.auc([0.5, 0.5, 0.5, 0.2, 0.9], [1, 1, 0, 0, 0]) == pytest.approx(0.5)

  def test_extremes(self):
    assert metrics.auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert metrics.auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert metrics.auc([3.0, 3.0, 3.0, 3.0], [1, 0, 1, 0]) == 0.5

  @pytest.mark.parametrize("seed", range(5))
  def test_matches_brute_force_pair_count(self, seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 300))
    # Few distinct values, so most pairs include ties.
    scores = rng.integers(0, 6, size=size).astype(np.float64) / 4.0
    labels = rng.random(size) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False  # both classes present
    expected = _brute_force_auc(scores, labels)
    assert metrics.auc(scores, labels) == pytest.approx(expected, rel=1e-12, abs=1e-12)

  def test_input_order_does_not_matter(self):
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=50).astype(np.float64)
    labels = rng.random(50) < 0.4
    perm = rng.permutation(50)
    assert metrics.auc(scores[perm], labels[perm]) == pytest.approx(metrics.auc(scores, labels))

  @pytest.mark.parametrize(
    "labels", [[1, 1, 1], [0, 0, 0], []], ids=["no_negative", "no_positive", "empty"]
  )
  def test_nan_when_a_class_is_empty(self, labels):
    scores = np.arange(len(labels), dtype=np.float64)
    assert math.isnan(metrics.auc(scores, labels))


class TestSlateNdcg:
  # Linear gains (gain / log2(position + 2)), as metrics.slate_ndcg computes them; k = 3.
  #   log2(2) = 1, log2(3) = 1.584962500721156, log2(4) = 2.
  # Slate A, no padding: scores [0.9, 0.3, 0.5, 0.8], gains [0, 2, 1, 0].
  #   Order by score: 0 (gain 0), 3 (0), 2 (1), 1 (2); top 3 gains 0, 0, 1.
  #   DCG  = 0/1 + 0/log2(3) + 1/log2(4) = 0.5
  #   IDCG = 2/1 + 1/log2(3) + 0 = 2 + 0.6309297535714575 = 2.6309297535714578
  #   NDCG = 0.5 / 2.6309297535714578 = 0.19004688335796713
  # Slate B, last two candidates are padding with the top scores and gain 2 each:
  #   scores [0.2, 0.1, 5.0, 7.0], gains [1, 2, 2, 2], valid [T, T, F, F].
  #   Valid order: 0 (gain 1), 1 (gain 2), then padding (gain 0).
  #   DCG  = 1/1 + 2/log2(3) = 1 + 1.261859507142915 = 2.261859507142915
  #   IDCG = 2/1 + 1/log2(3) = 2.6309297535714578 (padding gains do not count)
  #   NDCG = 2.261859507142915 / 2.6309297535714578 = 0.8597186998521972
  # Slate C: no valid gain (its only gain sits on padding) -> no ideal ordering, left out.
  # Mean over A and B = (0.19004688335796713 + 0.8597186998521972) / 2 = 0.5248827916050821
  SCORES = np.array([[0.9, 0.3, 0.5, 0.8], [0.2, 0.1, 5.0, 7.0], [0.4, 0.3, 0.2, 9.0]])
  GAINS = np.array([[0, 2, 1, 0], [1, 2, 2, 2], [0, 0, 0, 2]])
  VALID = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)

  def test_hand_computed(self):
    got = metrics.slate_ndcg(self.SCORES, self.GAINS, self.VALID, k=3)
    assert got == pytest.approx(0.5248827916050821, rel=1e-12)

  def test_each_slate_alone(self):
    a = metrics.slate_ndcg(self.SCORES[:1], self.GAINS[:1], self.VALID[:1], k=3)
    b = metrics.slate_ndcg(self.SCORES[1:2], self.GAINS[1:2], self.VALID[1:2], k=3)
    assert a == pytest.approx(0.19004688335796713, rel=1e-12)
    assert b == pytest.approx(0.8597186998521972, rel=1e-12)

  def test_slate_without_gain_is_excluded(self):
    with_c = metrics.slate_ndcg(self.SCORES, self.GAINS, self.VALID, k=3)
    without_c = metrics.slate_ndcg(self.SCORES[:2], self.GAINS[:2], self.VALID[:2], k=3)
    assert with_c == without_c

  def test_nan_when_no_slate_has_gain(self):
    assert math.isnan(metrics.slate_ndcg(self.SCORES[2:], self.GAINS[2:], self.VALID[2:], k=3))

  def test_ties_keep_slate_order(self):
    # Equal scores: candidate 0 (gain 0) stays before candidate 1 (gain 1).
    # DCG = 1/log2(3) = 0.6309297535714575; IDCG = 1 -> 0.6309297535714575.
    got = metrics.slate_ndcg([[1.0, 1.0]], [[0, 1]], [[True, True]], k=5)
    assert got == pytest.approx(0.6309297535714575, rel=1e-12)

  def test_perfect_order_is_one(self):
    got = metrics.slate_ndcg([[3.0, 2.0, 1.0, 0.0]], [[2, 1, 0, 0]], [[True] * 4])
    assert got == 1.0


class TestSampledRanks:
  def test_counts_only_the_drawn_negatives_scored_above(self):
    # User 0, target 1 (0.5) against items 2 (0.7) and 3 (0.5): one strictly above -> 1.
    # User 2, target 4 (0.4) against items 1 (0.3) and 5 (0.8) -> 1.
    ranks = metrics.sampled_ranks(_SCORES[[0, 2]], _TARGETS[[0, 2]], np.array([[2, 3], [1, 5]]))
    np.testing.assert_array_equal(ranks, [1, 1])

  def test_nan_fails(self):
    with pytest.raises(ValueError, match="NaN"):
      metrics.sampled_ranks(_SCORES[[1]], _TARGETS[[1]], np.array([[0, 2]]))


def test_engaged_probability_of_exclusive_outcomes_is_their_sum():
  # The world's click 0.3 and save 0.2 of one item: engaged 0.5, where 1 - (0.7 x 0.8) = 0.44
  # would rank it below an item clicked 0.48 and never saved.
  p = np.array([[0.3, 0.2], [0.48, 0.0], [0.7, 0.6]])
  np.testing.assert_allclose(metrics.engaged_probability(p), [0.5, 0.48, 1.0])


def test_results_name_the_commit_the_run_started_from(monkeypatch):
  monkeypatch.setattr(records, "git_commit", lambda: "abc123")
  assert records.commit_record("abc123") == {"git_commit": "abc123"}
  # Committed (or edited) during the run: the code that ran is the start's, the end is noted.
  monkeypatch.setattr(records, "git_commit", lambda: "def456")
  assert records.commit_record("abc123") == {
    "git_commit": "abc123",
    "git_commit_at_end": "def456",
  }
