"""The history baselines' ranks, worked out by hand on a catalogue of 8 items, both protocols,
and the device scorers' ranks of them and of popularity against NumPy blocks' on random cases."""

import numpy as np
import pytest

from unipinrec.data.examples import EvalExamples
from unipinrec.evaluation import catalogue, evaluate, history_baselines, popularity

# Popularity falls with the id: item i scores -i (column 0 is padding).
POPULARITY = np.array([-np.inf, -1, -2, -3, -4, -5, -6, -7, -8])
# Each user's whole history in time order, and the target after it.
HISTORIES = [[3, 5, 3, 7], [2, 6], [1, 4, 1, 4, 8], [1, 4, 1, 4]]
TARGETS = [3, 6, 5, 1]
NEGATIVES = np.array([[1, 2, 8], [1, 3, 4], [2, 6, 7], [2, 3, 8]])  # never-seen draws


def _history_first(histories, popularity_scores, key, items=None):
  """The reference: [U, I] float64 scores of the increasing ids `items` (None: all), the
  popularity, with each history item at (the highest popularity + 1) + `key`."""
  popularity_scores = np.asarray(popularity_scores, np.float64)
  items = np.arange(len(popularity_scores)) if items is None else np.asarray(items)
  scores = np.array(np.broadcast_to(popularity_scores[items], (len(histories), len(items))))
  rows, history_items, counts, last = history_baselines.history_pairs(
    histories, len(popularity_scores)
  )
  columns, found = catalogue.item_columns(items, history_items)
  longest = max((len(h) for h in histories), default=0)
  first = popularity_scores[1:].max() + 1.0
  scores[rows[found], columns[found]] = first + key(counts, last, longest)[found]
  return scores


REFERENCE_KEYS = {
  "most_recent": lambda counts, last, longest: last,
  "most_frequent": lambda counts, last, longest: counts * longest + last,
}


def _reference_blocks(name, histories, popularity_scores):
  """The NumPy `catalogue.BlockScorer` of a baseline ("popularity" or a history one)."""

  def score_block(rows, items):
    if name == "popularity":
      users = len(histories[rows])
      return np.broadcast_to(popularity_scores[items], (users, len(items)))
    return _history_first(histories[rows], popularity_scores, REFERENCE_KEYS[name], items)

  return score_block


def _device_scorer(name, histories, popularity_scores):
  """The package's `catalogue.DotScorer` of a baseline."""
  ranks = popularity.popularity_ranks(popularity_scores)
  if name == "popularity":
    return popularity.popularity_scorer(ranks, len(histories))
  key = history_baselines.HISTORY_BASELINES[name]
  return history_baselines.history_scorer(histories, ranks, key)


def _examples(targets=TARGETS, histories=HISTORIES) -> EvalExamples:
  empty = np.zeros(0, np.int32)
  return EvalExamples(
    retrieval_history={},
    retrieval_targets=np.asarray(targets, np.int32),
    retrieval_target_outcomes=np.ones((len(targets), 1), bool),
    retrieval_requests=np.full(len(targets), -1),
    retrieval_seen=[np.asarray(h, np.int32) for h in histories],
    ranking_history={},
    ranking_requests=empty,
    ranking_items=np.zeros((0, 1), np.int32),
    ranking_outcomes=np.zeros((0, 1, 1), bool),
    ranking_times=np.zeros(0, np.float32),
    ranking_surfaces=empty,
  )


# Unfiltered, every item scoring strictly above the target counts:
#   user 0, target 3: most recent orders 7, 3, 5 -> 1 (item 7); most frequent 3 (twice) first -> 0.
#   user 1, target 6, its last item: first under both -> 0.
#   user 2, target 5 (not in the history): above it 8, 4, 1 (history) and 2, 3 (popularity) -> 5.
#   user 3, target 1: 1 and 4 twice each, 4 more recent -> 1 under both.
# Filtered, the other history items leave: users 0, 1, 3 -> 0; user 2 keeps 2, 3 above -> 2, as
# under popularity. Sampled: the target among its 3 never-seen draws; only user 2's item 2 beats 5.
EXPECTED = {
  "most_recent": {"retrieval_unfiltered": [1, 0, 5, 1], "retrieval": [0, 0, 2, 0]},
  "most_frequent": {"retrieval_unfiltered": [0, 0, 5, 1], "retrieval": [0, 0, 2, 0]},
}


@pytest.mark.parametrize("scorer", [_reference_blocks, _device_scorer])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ranks_match_the_hand_computed_ones(name, scorer):
  examples = _examples()
  score = scorer(name, examples.retrieval_seen, POPULARITY)
  ranks = catalogue.catalogue_ranks(
    score, len(POPULARITY) - 1, examples.retrieval_targets, examples.retrieval_seen, NEGATIVES
  )
  for protocol, expected in EXPECTED[name].items():
    np.testing.assert_array_equal(ranks[protocol], expected, err_msg=protocol)
  np.testing.assert_array_equal(ranks["retrieval_sampled"], [0, 0, 1, 0])


def test_history_items_score_distinct_and_above_every_other_item():
  history = [np.array([4, 2, 2, 4, 6])]
  scores = _history_first(history, POPULARITY, REFERENCE_KEYS["most_frequent"])[0]
  # 4 and 2 twice each (4 more recent), then 6; then the rest by popularity.
  np.testing.assert_array_equal(np.argsort(-scores[1:]) + 1, [4, 2, 6, 1, 3, 5, 7, 8])
  np.testing.assert_array_equal(scores[[1, 3, 5, 7, 8]], POPULARITY[[1, 3, 5, 7, 8]])
  # The device scorer: popularity ranks 7 (item 1) to 0 (item 8); 6, 2, 4 score 8, 9, 10.
  device = _device_scorer("most_frequent", history, POPULARITY).score_block(
    slice(0, 1), np.arange(9)
  )
  np.testing.assert_array_equal(device[0, 1:], [7, 9, 5, 10, 3, 8, 1, 0])


def test_float64_popularity_that_rounds_together_in_float32_keeps_its_order():
  close = np.array([-np.inf, -3.0, -3.0 + 1e-9, -3.0, -1.0])  # items 1 and 2 one float32
  assert np.float32(close[1]) == np.float32(close[2])
  np.testing.assert_array_equal(popularity.popularity_ranks(close), [0, 0, 1, 0, 2])


def test_popularity_ranks_refuse_more_distinct_values_than_float32_integers(monkeypatch):
  monkeypatch.setattr(popularity, "EXACT_INTEGERS", 3)
  with pytest.raises(ValueError, match="distinct item frequencies"):
    popularity.popularity_ranks(np.array([-np.inf, -1.0, -2.0, -3.0, -4.0]))


@pytest.mark.parametrize("name", ["popularity", *sorted(EXPECTED)])
def test_device_ranks_equal_the_numpy_blocks_ones(name):
  rng = np.random.default_rng(5)
  num_items, num_users = 40, 11
  # Few distinct values (ties), and two float64 values one float32 apart.
  scores = np.concatenate([[-np.inf], -rng.integers(1, 6, num_items).astype(np.float64)])
  scores[[3, 9]] = -2.5, -2.5 + 1e-9
  # Histories with repeats (some empty); targets inside the history for even users.
  histories = [rng.integers(1, 15, rng.integers(0, 9)) for _ in range(num_users)]
  targets = rng.integers(1, num_items + 1, num_users)
  inside = [u for u in range(0, num_users, 2) if len(histories[u])]
  targets[inside] = [rng.choice(histories[u]) for u in inside]
  examples = _examples(targets, histories)
  negatives = rng.integers(1, num_items + 1, (num_users, 6))
  seen = examples.retrieval_seen
  config = catalogue.EvalConfig(user_chunk=4, item_chunk=16)
  reference = catalogue.catalogue_ranks(
    _reference_blocks(name, seen, scores), num_items, targets, seen, negatives, config
  )
  device = catalogue.catalogue_ranks(
    _device_scorer(name, seen, scores), num_items, targets, seen, negatives, config
  )
  assert set(device) == {"retrieval", "retrieval_unfiltered", "retrieval_sampled"}
  for protocol, ranks in reference.items():
    np.testing.assert_array_equal(device[protocol], ranks, err_msg=protocol)
  # The evaluation functions rank on the device path: the same filtered figures.
  if name == "popularity":
    report = evaluate.evaluate_popularity(examples, scores, ["any"], negatives, config=config)
  else:
    report = history_baselines.evaluate_history_baselines(examples, scores, negatives, config)[name]
  assert report["retrieval"] == evaluate.retrieval_report(reference)["retrieval"]


def test_report_over_chunks():
  chunks = catalogue.EvalConfig(user_chunk=3, item_chunk=3)  # rows and items restart per chunk
  report = history_baselines.evaluate_history_baselines(_examples(), POPULARITY, NEGATIVES, chunks)
  assert set(report) == {"most_recent", "most_frequent"}
  recent = report["most_recent"]
  assert set(recent) == {"retrieval", "retrieval_unfiltered", "retrieval_sampled"}
  # Ranks 1, 0, 5, 1: MRR (1/2 + 1 + 1/6 + 1/2) / 4; HR@10 1.
  assert recent["retrieval_unfiltered"]["mrr"] == pytest.approx((0.5 + 1 + 1 / 6 + 0.5) / 4)
  assert recent["retrieval_unfiltered"]["hr@10"] == 1.0
  # Ranks 0, 0, 2, 0: NDCG@10 (3 + 1 / log2(4)) / 4.
  assert report["most_frequent"]["retrieval"]["ndcg@10"] == pytest.approx((3 + 0.5) / 4)
  assert recent["retrieval"]["num_users"] == 4
