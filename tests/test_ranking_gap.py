"""The ranking-gap analysis against hand-made cases whose parts are known."""

import numpy as np
import pytest

from unipinrec.bench import ranking_gap
from unipinrec.evaluation import metrics


def test_within_slate_auc_by_hand():
  scores = np.array([[0.9, 0.1, 0.5, 0.0], [0.2, 0.8, 0.3, 0.7], [0.5, 0.4, 0.3, 0.2]])
  labels = np.array([[1, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]], bool)
  valid = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
  # Slate 0 (its padding left out): the engaged 0.9 beats 0.1 and 0.5, AUC 1. Slate 1: of the
  # pairs (0.2 | 0.7 engaged against 0.8 | 0.3), only 0.7 > 0.3 is ordered right, AUC 1/4.
  # Slate 2 has no engaged item and is left out, not counted as a half.
  assert ranking_gap.within_slate_auc(scores, labels, valid) == pytest.approx((1.0 + 0.25) / 2)


def test_slate_means_are_swapped_and_the_order_inside_kept():
  rng = np.random.default_rng(0)
  scores, reference = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
  valid = rng.random((4, 5)) < 0.8
  valid[:, 0] = True
  swapped = ranking_gap.with_slate_means_of(scores, reference, valid)

  def means(x):
    return [x[r][valid[r]].mean() for r in range(4)]

  np.testing.assert_allclose(means(swapped), means(reference))
  for r in range(4):  # one shift per slate
    np.testing.assert_allclose(np.ptp((swapped - scores)[r][valid[r]]), 0.0, atol=1e-12)


def test_residual_components_find_the_variances_they_were_built_from():
  rng = np.random.default_rng(1)
  slates, size, num_items = 4000, 10, 400
  items = rng.integers(1, num_items, (slates, size))
  item_effect = rng.normal(0.0, 1.0, num_items)  # variance 1
  slate_effect = rng.normal(0.0, np.sqrt(0.5), (slates, 1))  # 0.5
  noise = rng.normal(0.0, np.sqrt(0.25), (slates, size))  # 0.25: the user-item part
  residual = item_effect[items] + slate_effect + noise
  valid = np.ones(items.shape, bool)
  parts = ranking_gap.residual_components(residual, items, valid)
  assert parts["item"] == pytest.approx(1.0, rel=0.15)
  assert parts["slate"] == pytest.approx(0.5, rel=0.1)
  assert parts["user_item"] == pytest.approx(0.25, abs=0.1)
  assert parts["total"] == pytest.approx(residual.var(), rel=1e-6)


def test_term_weights_recover_a_linear_logit():
  rng = np.random.default_rng(2)
  terms = {"a": rng.normal(size=500), "b": rng.normal(size=500)}
  logits = 3.0 * terms["a"] - 0.5 * terms["b"] + 1.5
  weights = ranking_gap.term_weights(logits, terms)
  assert weights["a"] == pytest.approx(3.0) and weights["b"] == pytest.approx(-0.5)
  assert weights["intercept"] == pytest.approx(1.5) and weights["r2"] == pytest.approx(1.0)


def test_gap_report_scores_the_engaged_probability():
  rng = np.random.default_rng(3)
  probabilities = rng.uniform(0.0, 0.5, (50, 6, 2))
  outcomes = rng.random((50, 6, 2)) < probabilities
  items = rng.integers(1, 30, (50, 6))
  items[:, -1] = 0  # padding, left out everywhere
  terms = {"x": rng.normal(size=items.shape)}
  report = ranking_gap.gap_report(probabilities, probabilities, outcomes, items, terms)
  engaged = probabilities.sum(-1)  # exclusive outcomes (each below 0.5)
  valid = items > 0
  want = metrics.auc(engaged[valid], outcomes.any(-1)[valid])
  assert report["model"]["auc_engaged"] == pytest.approx(want)
  assert report["model"] == report["reference"]
  # The reference's own slate means change nothing; the residual of a scorer with itself is 0.
  assert report["model"]["auc_with_reference_slate_means"] == pytest.approx(want)
  assert report["residual_variance"]["total"] == pytest.approx(0.0, abs=1e-12)
