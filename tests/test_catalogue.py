"""Chunked full-catalogue ranks and top items against the unchunked reference, and the ANN path."""

import numpy as np
import pytest

from unipinrec.evaluation import ann, catalogue, metrics
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig

U, N = 23, 41  # neither divides by the chunk sizes below
CHUNKS = [catalogue.EvalConfig(user_chunk=5, item_chunk=7), catalogue.EvalConfig(1, 1)]


def _case(seed: int):
  """Integer scores (many ties), targets, seen lists with repeats, the target, padding."""
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 6, (U, N + 1)).astype(np.float32)
  targets = rng.integers(1, N + 1, U)
  seen = [rng.integers(0, N + 1, rng.integers(0, 12)) for _ in range(U)]
  seen[0] = np.array([targets[0], targets[0], 3])  # the target is never removed
  negatives = rng.integers(1, N + 1, (U, 9))
  return scores, targets, seen, negatives


def _matrix_scorer(scores: np.ndarray, calls: list) -> catalogue.BlockScorer:
  def score_block(rows, items):
    block = scores[rows][:, items]
    calls.append(block.shape)
    return block

  return score_block


@pytest.mark.parametrize("chunks", CHUNKS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_ranks_equal_the_unchunked_ones(seed, chunks):
  scores, targets, seen, negatives = _case(seed)
  calls = []
  ranks = catalogue.catalogue_ranks(
    _matrix_scorer(scores, calls), N, targets, seen, negatives, chunks
  )
  np.testing.assert_array_equal(ranks["retrieval"], metrics.target_ranks(scores, targets, seen))
  np.testing.assert_array_equal(
    ranks["retrieval_unfiltered"], metrics.target_ranks(scores, targets)
  )
  np.testing.assert_array_equal(
    ranks["retrieval_sampled"], metrics.sampled_ranks(scores, targets, negatives)
  )
  # Memory is one block: never more users or items at once than the chunks say.
  assert max(rows for rows, _ in calls) <= chunks.user_chunk
  # The items: a chunk, or the chunk's targets scored first.
  assert max(items for _, items in calls) <= max(chunks.item_chunk, chunks.user_chunk)


def test_non_finite_scores_fail_but_the_padding_column_is_free():
  scores, targets, seen, _ = _case(0)
  scores[:, 0] = -np.inf
  catalogue.catalogue_ranks(_matrix_scorer(scores, []), N, targets, seen, None, CHUNKS[0])
  scores[3, 17] = np.nan
  with pytest.raises(ValueError, match="NaN or inf"):
    catalogue.catalogue_ranks(_matrix_scorer(scores, []), N, targets, seen, None, CHUNKS[0])


@pytest.mark.parametrize("chunks", CHUNKS)
def test_top_items_merge_chunks_exactly(chunks):
  rng = np.random.default_rng(5)
  scores = rng.normal(size=(U, N + 1))  # no ties: one exact answer
  top = catalogue.top_items(_matrix_scorer(scores, []), N, U, 10, chunks)
  np.testing.assert_array_equal(top, np.argsort(-scores[:, 1:], axis=1)[:, :10] + 1)
  assert catalogue.top_items(_matrix_scorer(scores, []), N, U, 100, chunks).shape == (U, N)


def test_dot_scorer_blocks_add_the_history_bias_once():
  rng = np.random.default_rng(6)
  queries = rng.normal(size=(3, 4)).astype(np.float32)
  vectors = rng.normal(size=(N + 1, 4)).astype(np.float32)
  history = np.array([[5, 9, 0], [9, 0, 0], [1, 2, 40]])
  bias = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [4.0, 5.0, 6.0]], np.float32)
  scorer = catalogue.DotScorer(queries, vectors, 0.5, history, bias)
  want = queries @ vectors.T / np.float32(0.5)
  for row, items in enumerate(history):
    want[row, items] += bias[row]
  items = np.array([2, 5, 9, 30, 40])
  np.testing.assert_allclose(scorer.score_block(slice(0, 3), items), want[:, items], rtol=1e-6)
  np.testing.assert_allclose(
    scorer.subset(np.array([2])).score_block(slice(None), items), want[2:, items], rtol=1e-6
  )


def test_ann_with_exact_search_matches_the_exact_evaluation():
  rng = np.random.default_rng(7)
  vectors = rng.normal(size=(N + 1, 8)).astype(np.float32)
  queries = rng.normal(size=(U, 8)).astype(np.float32)
  scorer = catalogue.DotScorer(queries, vectors, 0.05)
  _, targets, seen, negatives = _case(3)
  config = IndexConfig(dtype="f32", exact=True)
  index = store.build(vectors, config)
  found = ann.ann_ranks(index, True, queries, targets, seen, depth=N)
  exact = catalogue.catalogue_ranks(scorer.score_block, N, targets, seen, negatives, CHUNKS[0])
  for name in ("retrieval", "retrieval_unfiltered"):
    np.testing.assert_array_equal(found[name], exact[name], err_msg=name)
  # A shallow search misses some targets ranked past it: infinite rank, a miss at every K.
  shallow = ann.ann_ranks(index, True, queries, targets, seen, depth=4)["retrieval_unfiltered"]
  deep = exact["retrieval_unfiltered"]
  assert np.all((shallow == deep) | (np.isinf(shallow) & (deep >= 4))) and np.isinf(shallow).any()
  np.testing.assert_array_equal(
    ann.drawn_ranks(scorer, targets, negatives, CHUNKS[0]), exact["retrieval_sampled"]
  )
  recall = ann.ann_recall(index, config, scorer.subset(np.arange(6)), CHUNKS[0])
  assert recall["recall@10"] == 1.0 and recall["recall@41"] == 1.0 and recall["num_users"] == 6
  assert recall["index"]["exact"] is True


@pytest.mark.slow
def test_model_evaluation_with_an_exact_index_reports_the_exact_figures():
  from experiments.configs import synthetic
  from unipinrec.config import from_mapping
  from unipinrec.evaluation import evaluate
  from unipinrec.train.experiment import setup_experiment

  config = synthetic.get_config("runlocal")
  config.model.repeat_buckets = 0  # an index holds no history bias
  experiment = setup_experiment(from_mapping(config.to_dict()))
  data, params = experiment.data, experiment.initial_state.params
  names = data.logs.outcome_names

  def figures(eval_config):
    return evaluate.evaluate_model(
      experiment.model,
      params,
      data.eval_examples,
      names,
      64,
      eval_config=eval_config,
      index_config=IndexConfig(dtype="f32", exact=True),
    )

  exact = figures(catalogue.EvalConfig(user_chunk=7, item_chunk=100))
  searched = figures(catalogue.EvalConfig(ann=True, ann_recall_users=10))
  for name in ("retrieval", "retrieval_unfiltered"):
    # Every K up to the search's depth is exact; MRR leaves out the targets past it.
    mrr = searched[name].pop("mrr")
    assert mrr <= exact[name].pop("mrr")
    assert searched[name] == pytest.approx(exact[name]), name
  assert searched["ann"]["recall@10"] == 1.0 and searched["ann"]["recall@100"] == 1.0
  assert searched["ann"]["num_users"] == 10 and "ann" not in exact
