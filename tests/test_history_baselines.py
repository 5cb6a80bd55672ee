"""The history baselines' ranks, worked out by hand on a catalogue of 8 items, both protocols."""

import numpy as np
import pytest

from unipinrec.data.examples import EvalExamples
from unipinrec.evaluation import catalogue, history_baselines

# Popularity falls with the id: item i scores -i (column 0 is padding).
POPULARITY = np.array([-np.inf, -1, -2, -3, -4, -5, -6, -7, -8])
# Each user's whole history in time order, and the target after it.
HISTORIES = [[3, 5, 3, 7], [2, 6], [1, 4, 1, 4, 8], [1, 4, 1, 4]]
TARGETS = [3, 6, 5, 1]
NEGATIVES = np.array([[1, 2, 8], [1, 3, 4], [2, 6, 7], [2, 3, 8]])  # never-seen draws


def _examples() -> EvalExamples:
  empty = np.zeros(0, np.int32)
  return EvalExamples(
    retrieval_history={},
    retrieval_targets=np.asarray(TARGETS, np.int32),
    retrieval_target_outcomes=np.ones((len(TARGETS), 1), bool),
    retrieval_requests=np.full(len(TARGETS), -1),
    retrieval_seen=[np.asarray(h, np.int32) for h in HISTORIES],
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


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ranks_match_the_hand_computed_ones(name):
  examples = _examples()
  scores = history_baselines.HISTORY_BASELINES[name]

  def score_block(rows, items):
    return scores(examples.retrieval_seen[rows], POPULARITY, items)

  ranks = catalogue.catalogue_ranks(
    score_block, len(POPULARITY) - 1, examples.retrieval_targets, examples.retrieval_seen, NEGATIVES
  )
  for protocol, expected in EXPECTED[name].items():
    np.testing.assert_array_equal(ranks[protocol], expected, err_msg=protocol)
  np.testing.assert_array_equal(ranks["retrieval_sampled"], [0, 0, 1, 0])


def test_history_items_score_distinct_and_above_every_other_item():
  scores = history_baselines.most_frequent_scores([np.array([4, 2, 2, 4, 6])], POPULARITY)[0]
  # 4 and 2 twice each (4 more recent), then 6; then the rest by popularity.
  np.testing.assert_array_equal(np.argsort(-scores[1:]) + 1, [4, 2, 6, 1, 3, 5, 7, 8])
  np.testing.assert_array_equal(scores[[1, 3, 5, 7, 8]], POPULARITY[[1, 3, 5, 7, 8]])


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
