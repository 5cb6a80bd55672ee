"""Sequences, the leave-last-out split and the protocol's evaluation rows (PROTOCOL.md).

Hand-made logs check each rule; on `../shared/data` the split must match
`SPLITS.md` (counts and checksum) and the ranking slates the published file.
"""

import re

import numpy as np
import pytest

from unipinrec.data import protocol
from unipinrec.data.interactions import Interactions
from unipinrec.data.readers import read_interactions
from unipinrec.data.sequences import (
  build_sequences,
  leave_last_out,
  split_checksum,
  to_user_logs,
)


def _log(rows, outcome_names=("low", "high")):
  """(user, item, time, outcome) rows in file order -> Interactions."""
  users, items, times, outcomes = (np.asarray(c, np.int64) for c in zip(*rows, strict=True))
  return Interactions(
    path="hand.tsv",
    users=users,
    items=items,
    timestamps=times,
    outcomes=outcomes.astype(np.int32),
    outcome_names=outcome_names,
    lines=np.arange(2, len(rows) + 2),
  )


# User 7: items 30, 10 tie at t=5 (file order kept), 20 at t=1 comes first, 50 last.
# User 3: two interactions only (training data, never a test user). Item 10 repeats.
_ROWS = [(7, 30, 5, 1), (3, 10, 2, 0), (7, 10, 5, 0), (7, 20, 1, 1), (3, 40, 9, 1), (7, 50, 8, 1)]


def test_sequences_sort_by_time_keep_ties_in_file_order_and_remap_ids():
  seq = build_sequences(_log(_ROWS))
  np.testing.assert_array_equal(seq.user_ids, [3, 7])
  np.testing.assert_array_equal(seq.items, [1, 4, 2, 3, 1, 5])  # 10..50 -> 1..5
  # User 3: 10, 40; user 7: 20 (t=1), 30 then 10 (tie at t=5, file order), 50.
  np.testing.assert_array_equal(
    seq.item_vocabulary.to_original(seq.items), [10, 40, 20, 30, 10, 50]
  )
  np.testing.assert_array_equal(seq.offsets, [0, 2, 6])
  np.testing.assert_array_equal(seq.lines, [3, 6, 5, 2, 4, 7])


def test_leave_last_out_targets_and_training_part():
  seq = build_sequences(_log(_ROWS))
  split = leave_last_out(seq)
  np.testing.assert_array_equal(split.test_users, [1])  # user 7 only
  assert seq.item_vocabulary.to_original(seq.items[split.test_rows[0]]) == 50
  assert seq.item_vocabulary.to_original(seq.items[split.valid_rows[0]]) == 10
  np.testing.assert_array_equal(split.training_lengths(seq), [2, 2])
  logs = to_user_logs(seq, split.training_lengths(seq))
  np.testing.assert_array_equal(
    seq.item_vocabulary.to_original(logs.action_items), [10, 40, 20, 30]
  )
  assert logs.action_outcomes[2].tolist() == [False, True]


def test_protocol_rows_history_and_sampled_negatives():
  rows = [(1, item, t, 0) for t, item in enumerate([5, 6, 7, 8])] + [(2, 1, 0, 0), (2, 2, 1, 1)]
  seq = build_sequences(_log(rows))
  split = leave_last_out(seq)
  test = protocol.protocol_examples(seq, split, max_length=2, target="test")
  # History before the test item 8, cut to the 2 most recent: 6, 7.
  history = test.examples.retrieval_history
  np.testing.assert_array_equal(seq.item_vocabulary.to_original(history["items"][0]), [6, 7])
  np.testing.assert_array_equal(
    seq.item_vocabulary.to_original(test.examples.retrieval_seen[0]), [5, 6, 7]
  )
  valid = protocol.protocol_examples(seq, split, max_length=4, target="valid")
  assert seq.item_vocabulary.to_original(valid.examples.retrieval_targets[0]) == 7
  assert int(valid.examples.retrieval_history["history_lengths"][0]) == 2


def test_sampled_impressions_hold_one_real_action_among_never_engaged_items():
  rng = np.random.default_rng(0)
  rows = [
    (u, int(i), t, int(rng.integers(2)))
    for u in range(5)
    for t, i in enumerate(rng.choice(np.arange(1, 60), 12, replace=False))
  ]
  seq = build_sequences(_log(rows))
  logs = protocol.sampled_impressions(to_user_logs(seq), slates_per_user=4, slate_size=6, seed=0)
  assert len(logs.slate_items) == 5 * 4
  for user in range(5):
    actions = logs.action_items[logs.action_offsets[user] : logs.action_offsets[user + 1]]
    for s in range(logs.slate_offsets[user], logs.slate_offsets[user + 1]):
      engaged = logs.slate_outcomes[s].any(-1)
      assert engaged.sum() == 1
      prefix = logs.slate_prefix[s]
      assert prefix >= 1
      assert logs.slate_items[s][engaged][0] == actions[prefix]  # the action right after
      np.testing.assert_array_equal(
        logs.slate_outcomes[s][engaged][0],
        logs.action_outcomes[logs.action_offsets[user] + prefix],
      )
      assert not np.isin(logs.slate_items[s][~engaged], actions).any()


def _splits_table(path):
  table = {}
  for line in path.read_text().splitlines():
    cells = [c.strip(" `") for c in line.split("|")]
    if len(cells) > 6 and re.fullmatch(r"[0-9a-f]{64}", cells[6]):
      table[cells[1]] = (int(cells[2]), int(cells[3]), int(cells[4]), int(cells[5]), cells[6])
  return table


@pytest.mark.parametrize(
  "name,relative", [("ml-100k", "ml-100k"), ("amazon-games", "amazon-games/games.txt")]
)
def test_split_matches_splits_md(shared_data_dir, name, relative):
  users, items, interactions, test_users, checksum = _splits_table(shared_data_dir / "SPLITS.md")[
    name
  ]
  seq = build_sequences(read_interactions(str(shared_data_dir / relative)))
  split = leave_last_out(seq)
  assert (seq.num_users, seq.num_items, len(seq.items), len(split.test_users)) == (
    users,
    items,
    interactions,
    test_users,
  )
  assert split_checksum(seq, split) == checksum


def test_ml100k_ranking_slates_match_the_published_file(shared_data_dir):
  seq = build_sequences(read_interactions(str(shared_data_dir / "ml-100k")))
  split = leave_last_out(seq)
  examples = protocol.protocol_examples(seq, split, 50, "test", ranking_slates=True).examples
  published = {}
  for line in (shared_data_dir / "ml-100k" / "ranking_slates.tsv").read_text().splitlines()[1:]:
    user, item, outcome = line.split("\t")
    published.setdefault(int(user), []).append((int(item), outcome))
  names = ("none",) + seq.outcome_names
  for row, user in enumerate(split.test_users):
    outcomes = examples.ranking_outcomes[row]
    items = seq.item_vocabulary.to_original(examples.ranking_items[row]).tolist()
    ours = [
      (item, names[int(np.argmax(o)) + 1 if o.any() else 0])
      for item, o in zip(items, outcomes, strict=True)
    ]
    assert ours == published[int(seq.user_ids[user])], f"user {seq.user_ids[user]}"
