"""Repeat shares, the primary retrieval figure they choose from the validation targets, and
where that choice shows: the validation target, results.json's `primary` and its checks."""

import dataclasses
import types

import numpy as np
import pytest

from experiments.configs import synthetic
from unipinrec.config import RunConfig, from_mapping
from unipinrec.data.dataset import DataConfig, prepare_data
from unipinrec.data.repeats import last_action_shares, repeat_shares
from unipinrec.data.sasrec import read_sasrec
from unipinrec.data.sequences import build_sequences, data_card, leave_last_out, to_user_logs
from unipinrec.errors import ConfigError
from unipinrec.evaluation import evaluate, report

# SASRec lines `user item`, in time order. Users 1 and 2's validation targets (second to last)
# repeat their history, no test target (last) does: validation 2/4 repeat, test 0/4.
VALID_REPEATS = [[1, 2, 3, 1, 4], [2, 5, 6, 5, 7], [3, 4, 5, 6, 8], [1, 6, 7, 8, 2]]
# The same with the last two swapped for users 1 and 2: test 2/4 repeat, validation 0/4.
TEST_REPEATS = [[1, 2, 3, 4, 1], [2, 5, 6, 7, 5], [3, 4, 5, 6, 8], [1, 6, 7, 8, 2]]


def _write(tmp_path, sequences):
  path = tmp_path / "log.txt"
  path.write_text("".join(f"{u} {i}\n" for u, items in enumerate(sequences, 1) for i in items))
  return path


def _prepare(tmp_path, sequences, threshold):
  path = _write(tmp_path, sequences)
  config = DataConfig(
    source="sasrec", path=str(path), tfds_dir=str(tmp_path / "tfds"), repeat_threshold=threshold
  )
  return prepare_data(config, max_length=4, seed=0)


def test_repeat_shares_in_history_and_last_item():
  # Targets 3 (in history, not last), 6 (last), 5 (absent), 1 (in history, not last).
  shares = repeat_shares(np.array([3, 6, 5, 1]), [[3, 5, 3, 7], [2, 6], [1, 4, 8], [1, 4]])
  assert (shares.in_history, shares.last_item, shares.num_targets) == (0.75, 0.25, 4)


@pytest.mark.parametrize(
  ("sequences", "threshold", "primary"),
  [
    (VALID_REPEATS, 0.5, "retrieval_unfiltered"),  # 2/4 reaches 0.5
    (VALID_REPEATS, 0.6, "retrieval"),
    (TEST_REPEATS, 0.5, "retrieval"),  # the test targets' repeats never decide
  ],
)
def test_validation_target_reads_the_primary_figure(
  tmp_path, monkeypatch, sequences, threshold, primary
):
  data = _prepare(tmp_path, sequences, threshold)
  assert data.repeats.primary == primary
  valid_share, test_share = (0.5, 0.0) if sequences is VALID_REPEATS else (0.0, 0.5)
  assert data.repeats.selection.in_history == valid_share
  assert data.repeats.test.in_history == test_share
  figures = {"retrieval": {"ndcg@10": 0.25}, "retrieval_unfiltered": {"ndcg@10": 0.75}}

  def evaluate_model(model, params, examples, names, batch_size, outcome_conditions, **configs):
    assert examples is data.valid_examples.examples and outcome_conditions
    return figures

  monkeypatch.setattr(evaluate, "evaluate_model", evaluate_model)
  run = dataclasses.replace(RunConfig(), eval_batch_size=8)
  experiment = types.SimpleNamespace(data=data, model=None, run=run)
  assert report.validation_target(experiment)(None) == figures[primary]["ndcg@10"]


def test_results_name_the_primary_figure_and_compare_on_it(tmp_path):
  data = _prepare(tmp_path, VALID_REPEATS, 0.5)
  model = {
    "retrieval": {"hr@10": 0.25, "ndcg@10": 0.1, "mrr": 0.1, "num_users": 4},
    "retrieval_unfiltered": {"hr@10": 0.5, "ndcg@10": 0.2, "mrr": 0.2, "num_users": 4},
  }
  figures = report.results_figures(data, model)
  assert figures["primary"] == "retrieval_unfiltered"
  repeats = figures["repeats"]
  assert repeats["selection"]["target_in_history"] == 0.5 and repeats["threshold"] == 0.5
  assert repeats["test"] == {"target_in_history": 0.0, "target_is_last_item": 0.0, "num_targets": 4}
  baselines = figures["baselines"]
  assert {"popularity", "most_recent", "most_frequent"} <= set(baselines)
  # 8 items: every target ranks under 10 unfiltered, so popularity's HR@10 is 1 and the
  # ratio is the model's unfiltered HR@10 (its filtered one would give 0.25).
  assert figures["checks"]["hr@10_over_popularity"] == 0.5
  # No test target repeats: with the history removed, the history baselines are popularity.
  for name in ("most_recent", "most_frequent"):
    assert baselines[name]["retrieval"] == baselines["popularity"]["retrieval"]
    assert set(baselines[name]) == {"retrieval", "retrieval_unfiltered", "retrieval_sampled"}


def test_last_action_shares_count_users_with_three_actions(tmp_path):
  # A fifth user repeats with 2 actions only: not a target.
  sequences = build_sequences(read_sasrec(_write(tmp_path, TEST_REPEATS + [[4, 4]])))
  shares = last_action_shares(to_user_logs(sequences), np.arange(5), 3)
  assert (shares.in_history, shares.num_targets) == (0.5, 4)


def test_data_card_reports_the_test_and_validation_shares(tmp_path):
  sequences = build_sequences(read_sasrec(_write(tmp_path, VALID_REPEATS)))
  card = data_card(sequences, leave_last_out(sequences))
  assert "test 0.0% (the last item 0.0%)  validation 50.0% (the last item 0.0%)" in card


def test_synthetic_primary_is_filtered_and_decided_on_training_users():
  run = from_mapping(synthetic.get_config("runlocal").to_dict())
  data = prepare_data(run.data, run.model.max_length, run.seed)
  repeats = data.repeats
  # The logging policy never shows an engaged item again, so no target repeats.
  assert repeats.test.in_history == 0.0 and repeats.selection.in_history == 0.0
  assert repeats.primary == "retrieval"
  # 120 users, 24 held out; every user has at least 3 actions.
  assert (repeats.test.num_targets, repeats.selection.num_targets) == (24, 96)


def test_threshold_outside_a_share_is_refused():
  config = synthetic.get_config("runlocal")
  config.data.repeat_threshold = 1.5
  with pytest.raises(ConfigError, match="repeat_threshold=1.5"):
    from_mapping(config.to_dict())
