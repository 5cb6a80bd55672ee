"""Blended training examples and leave-last-out evaluation rows on a hand-made log."""

import numpy as np
import pytest

from unipinrec.data import examples as examples_lib
from unipinrec.types import UserLogs


def _logs() -> UserLogs:
  """Two users: user 0 with 5 actions and 3 slates, user 1 with 2 actions and 1 slate."""
  clicks, saves = [True, False], [False, True]
  return UserLogs(
    action_offsets=np.array([0, 5, 7]),
    action_items=np.array([11, 12, 13, 14, 15, 21, 22], np.int32),
    action_outcomes=np.array([clicks, saves, clicks, clicks, saves, clicks, saves]),
    action_times=np.array([100, 110, 200, 5000, 5010, 50, 60]),
    action_surfaces=np.array([0, 0, 1, 1, 1, 0, 0], np.int32),
    slate_offsets=np.array([0, 3, 4]),
    slate_prefix=np.array([0, 2, 4, 0], np.int32),
    slate_times=np.array([90, 150, 4990, 40]),
    slate_surfaces=np.array([0, 1, 1, 0], np.int32),
    slate_items=np.array([[11, 12, 3], [13, 4, 5], [14, 15, 0], [21, 22, 6]], np.int32),
    slate_outcomes=np.zeros((4, 3, 2), bool),
    num_items=30,
    num_surfaces=2,
    outcome_names=("click", "save"),
  )


def test_training_windows_and_slate_prefixes():
  logs = _logs()
  examples = examples_lib.training_examples(
    logs, np.array([0, 1]), max_length=3, max_slates=2, seed=0
  )
  # User 0: windows end at 5 (actions 2..4) and at 2 (actions 0..1); user 1: one window.
  np.testing.assert_array_equal(examples["items"], [[13, 14, 15], [11, 12, 0], [21, 22, 0]])
  np.testing.assert_array_equal(examples["history_lengths"], [3, 2, 2])
  # Times are relative to the window's first action; padding repeats the last time.
  np.testing.assert_array_equal(examples["times"][0], [0, 4800, 4810])
  np.testing.assert_array_equal(examples["times"][1], [0, 10, 10])
  # Window 0 (actions 2..4) holds the slate after 4 actions: prefix 4 - 2 = 2 window actions;
  # the slate after 2 actions has no window action before it and is left out.
  np.testing.assert_array_equal(examples["slate_prefix"][0], [2, 0])
  np.testing.assert_array_equal(examples["slate_items"][0, 0], [14, 15, 0])
  np.testing.assert_array_equal(examples["slate_times"][0, 0], 4990 - 200)
  # Window 1 (actions 0..1) holds the slate after 2 actions; the cold-start slate is dropped.
  np.testing.assert_array_equal(examples["slate_prefix"][1], [2, 0])
  np.testing.assert_array_equal(examples["slate_items"][1, 0], [13, 4, 5])
  # User 1's only slate is cold-start: no slate.
  np.testing.assert_array_equal(examples["slate_prefix"][2], [0, 0])


def test_overlapping_windows_show_a_slate_with_each_history_prefix():
  examples = examples_lib.training_examples(
    _logs(), np.array([0]), max_length=3, max_slates=2, seed=0, window_stride=1
  )
  # Window ends 5, 4, 3 and 2, one action apart.
  np.testing.assert_array_equal(
    examples["items"], [[13, 14, 15], [12, 13, 14], [11, 12, 13], [11, 12, 0]]
  )
  # Slates after 2 and after 4 actions, by window: the one after 4 is seen with 2 and with 3
  # window actions before it, the one after 2 with 1, 2 and 2.
  np.testing.assert_array_equal(examples["slate_prefix"], [[2, 0], [1, 3], [2, 0], [2, 0]])
  np.testing.assert_array_equal(examples["slate_items"][:, 0, 0], [14, 13, 13, 13])
  np.testing.assert_array_equal(examples["slate_items"][1, 1], [14, 15, 0])
  with pytest.raises(ValueError, match="data.window_stride=-1"):
    examples_lib.training_examples(_logs(), np.array([0]), 3, 2, 0, window_stride=-1)


def test_evaluation_rows_are_leave_last_out():
  logs = _logs()
  held_out = examples_lib.evaluation_examples(
    logs, np.array([0, 1]), max_length=3, slates_per_user=2
  )
  # Only user 0 has 3 or more actions: target is the last, history the 3 before it.
  np.testing.assert_array_equal(held_out.retrieval_targets, [15])
  np.testing.assert_array_equal(held_out.retrieval_history["items"], [[12, 13, 14]])
  np.testing.assert_array_equal(held_out.retrieval_seen[0], [11, 12, 13, 14])
  np.testing.assert_array_equal(held_out.retrieval_requests, [2])
  # Ranking: user 0's last two slates with history, each with the actions before its request.
  np.testing.assert_array_equal(held_out.ranking_requests, [1, 2])
  np.testing.assert_array_equal(held_out.ranking_history["items"], [[11, 12, 0], [12, 13, 14]])
  np.testing.assert_array_equal(held_out.ranking_times, [150 - 100, 4990 - 110])


def test_item_log_frequency_counts_training_users_only():
  logs = _logs()
  log_frequency = examples_lib.item_log_frequency(logs, np.array([1]))
  counts = np.ones(31)
  counts[[21, 22]] += 1
  counts[0] = 0
  np.testing.assert_allclose(np.exp(log_frequency), counts / counts.sum(), rtol=1e-6)


def test_user_split_is_seeded_and_disjoint():
  train, held = examples_lib.split_users(100, 0.2, seed=5)
  assert len(held) == 20 and len(np.intersect1d(train, held)) == 0
  again = examples_lib.split_users(100, 0.2, seed=5)
  np.testing.assert_array_equal(again[1], held)


def test_generation_examples_cut_before_the_future():
  logs = _logs()
  # User 0's times: 100, 110, 200, 5000, 5010; the last 100 s hold actions 3 and 4.
  history, future = examples_lib.generation_examples(
    logs, np.array([0, 1]), max_length=4, horizon_seconds=100
  )
  np.testing.assert_array_equal(history["items"], [[11, 12, 13, 0]])  # user 1: nothing before
  np.testing.assert_array_equal(future, [[14, 15]])
  history, future = examples_lib.generation_examples(logs, np.array([0]), 4, horizon_seconds=4850)
  np.testing.assert_array_equal(history["history_lengths"], [2])
  np.testing.assert_array_equal(future, [[13, 14, 15]])


def test_evaluation_rows_carry_the_target_outcome():
  examples = examples_lib.evaluation_examples(logs := _logs(), np.array([0]), 4, 1)
  np.testing.assert_array_equal(examples.retrieval_target_outcomes, logs.action_outcomes[[4]])
