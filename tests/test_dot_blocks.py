"""A `DotScorer`'s catalogue ranks and top items on the device against the NumPy blocks and the
unchunked reference: ties, history bias, padded user and item chunks."""

import numpy as np
import pytest

from unipinrec.evaluation import catalogue, metrics

U, N, S = 23, 41, 3  # neither divides by the chunks: both last chunks are padded
CHUNKS = catalogue.EvalConfig(user_chunk=8, item_chunk=8)


def _case():
  """A scorer of small integer vectors (exact scores in any summation order, many ties) with a
  history bias, its full score matrix, targets, seen lists with repeats and negatives."""
  rng = np.random.default_rng(0)
  queries = rng.integers(-2, 3, (U, S)).astype(np.float32)
  vectors = rng.integers(-2, 3, (N + 1, S)).astype(np.float32)
  history = np.stack([rng.choice(np.arange(1, N + 1), 4, replace=False) for _ in range(U)])
  history[::3, 3] = 0  # padding slots
  bias = np.where(history > 0, rng.integers(1, 3, history.shape), 0).astype(np.float32)
  scorer = catalogue.DotScorer(queries, vectors, 0.5, history, bias)
  scores = queries @ vectors.T / np.float32(0.5)
  for row in range(U):
    scores[row, history[row]] += bias[row]
  targets = rng.integers(1, N + 1, U)
  targets[1] = history[1, 0]  # a target with a bias
  seen = [rng.integers(0, N + 1, rng.integers(0, 12)) for _ in range(U)]
  seen[0] = np.array([targets[0], targets[0], 3, 3, 0])
  negatives = rng.integers(1, N + 1, (U, 9))
  return scorer, scores, targets, seen, negatives


def test_device_ranks_equal_the_numpy_blocks_and_the_reference():
  scorer, scores, targets, seen, negatives = _case()
  assert len(np.unique(scores[:, 1:])) < N  # ties
  device = catalogue.catalogue_ranks(scorer, N, targets, seen, negatives, CHUNKS)
  host = catalogue.catalogue_ranks(scorer.score_block, N, targets, seen, negatives, CHUNKS)
  for name, values in host.items():
    np.testing.assert_array_equal(device[name], values, err_msg=name)
    assert device[name].dtype == np.int64
  np.testing.assert_array_equal(device["retrieval"], metrics.target_ranks(scores, targets, seen))
  np.testing.assert_array_equal(
    device["retrieval_sampled"], metrics.sampled_ranks(scores, targets, negatives)
  )


def test_device_top_items_break_ties_to_the_lower_id():
  scorer, scores, *_ = _case()
  top = catalogue.top_items(scorer, N, U, 10, CHUNKS)
  np.testing.assert_array_equal(top, np.argsort(-scores[:, 1:], axis=1, kind="stable")[:, :10] + 1)


def test_device_non_finite_scores_fail_but_the_padding_item_is_free():
  scorer, _, targets, seen, _ = _case()
  scorer.items[0] = np.nan
  catalogue.catalogue_ranks(scorer, N, targets, seen, None, CHUNKS)
  scorer.items[17, 1] = np.inf
  with pytest.raises(ValueError, match="NaN or inf"):
    catalogue.catalogue_ranks(scorer, N, targets, seen, None, CHUNKS)
  with pytest.raises(ValueError, match="NaN or inf"):
    catalogue.top_items(scorer, N, U, 10, CHUNKS)
