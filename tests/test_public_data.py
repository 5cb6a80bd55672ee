"""Public-data runs at small scale: the configs, validation with early stopping, results.json."""

import dataclasses
import shutil

import jax
import numpy as np
import pytest

from experiments.configs import games, ml100k, synthetic
from unipinrec import checkpoint
from unipinrec.config import from_mapping
from unipinrec.evaluation.generation import evaluate_generation
from unipinrec.evaluation.report import evaluate_state
from unipinrec.train import loop, schedule
from unipinrec.train.experiment import best_params, setup_experiment
from unipinrec.train.loop import train
from unipinrec.train.state import example_batch, initial_params


def _run_config(config, tfds_dir, **overrides):
  config.data.tfds_dir = str(tfds_dir)
  for name, value in overrides.items():
    config[name] = value
  return from_mapping(config.to_dict())


@pytest.fixture(scope="module")
def ml100k_experiment(shared_data_dir, tmp_path_factory):
  del shared_data_dir  # only for its skip when ../shared/data is absent
  config = ml100k.get_config("runlocal")
  return setup_experiment(_run_config(config, tmp_path_factory.mktemp("tfds")))


def test_ml100k_results_follow_the_protocol(ml100k_experiment, tmp_path):
  experiment = ml100k_experiment
  state = train(experiment, str(tmp_path)).state
  figures = evaluate_state(experiment, state.params)
  for name in ("retrieval", "retrieval_unfiltered"):
    assert figures[name]["num_users"] == 943
    assert set(figures[name]) >= {"hr@10", "ndcg@10", "hr@50", "hr@200", "ndcg@200", "mrr"}
  assert set(figures["retrieval_sampled"]) == {"hr@10", "ndcg@10", "mrr", "num_users"}
  # Sampled-100 ranks among 100 items only, so it can only be easier than the full catalogue.
  assert figures["retrieval_sampled"]["hr@10"] >= figures["retrieval"]["hr@10"]
  ranking = figures["ranking"]
  assert set(ranking) >= {"ndcg@5", "auc_engaged", "auc_low", "auc_high", "auc_high_vs_low"}
  assert figures["protocol"]["ranking_slate_seed"] == 20261125
  # Per-outcome rows split the test users; their "any" figures are the overall ones, restricted.
  by_condition = figures["retrieval_by_condition"]
  assert by_condition["high"]["num_users"] + by_condition["low"]["num_users"] == 943
  weighted = sum(v["num_users"] * v["any"]["hr@50"] for v in by_condition.values()) / 943
  assert weighted == pytest.approx(figures["retrieval"]["hr@50"])
  popularity = figures["baselines"]["popularity"]
  assert popularity["retrieval"]["num_users"] == 943 and "oracle" not in figures["baselines"]
  assert figures["primary"] == "retrieval" and figures["repeats"]["test"]["target_in_history"] == 0
  # No film is rated twice: without the history, the history baselines are popularity; with it,
  # each user's 19 or more earlier films outrank the target.
  for name in ("most_recent", "most_frequent"):
    assert figures["baselines"][name]["retrieval"] == popularity["retrieval"]
    assert figures["baselines"][name]["retrieval_unfiltered"]["hr@10"] == 0


def test_missing_data_names_the_place_looked_in(tmp_path):
  config = games.get_config("runlocal")
  config.data.path = str(tmp_path / "nowhere" / "games.txt")
  with pytest.raises(FileNotFoundError, match=r"nowhere/games.txt.*--config.data.path"):
    setup_experiment(_run_config(config, tmp_path))


@pytest.fixture(scope="module")
def synthetic_experiment():
  config = synthetic.get_config("runlocal")
  return setup_experiment(from_mapping(config.to_dict()))


@pytest.mark.slow
def test_early_stopping_keeps_the_best_and_stays_stopped(synthetic_experiment, tmp_path):
  run = dataclasses.replace(synthetic_experiment.run, eval_every=5, patience=2, num_steps=40)
  experiment = dataclasses.replace(synthetic_experiment, run=run)
  # Validation improves until step 10, then falls: patience 2 stops at step 20.
  scores = {5: 0.1, 10: 0.3, 15: 0.2, 20: 0.25, 25: 0.9}
  seen = []

  def validate(params):
    step = 5 * (len(seen) + 1)
    seen.append((step, jax.tree.map(np.array, params)))  # copies: the step donates its buffers
    return scores[step]

  trained = train(experiment, str(tmp_path), validate)
  assert int(trained.state.step) == 20 and [step for step, _ in seen] == [5, 10, 15, 20]
  assert trained.stopped == loop.STOPPED_BY_PATIENCE
  assert checkpoint.best_validation(checkpoint.make_best_manager(str(tmp_path))) == (10, 0.3)
  # Re-running the same command does not train on: the patience is already spent.
  again = train(experiment, str(tmp_path), validate)
  assert (int(again.state.step), again.stopped, len(seen)) == (20, loop.STOPPED_BY_PATIENCE, 4)
  # The parameters evaluated are those of step 10, not the last ones.
  with_validation = dataclasses.replace(
    experiment, data=dataclasses.replace(experiment.data, valid_examples=object())
  )
  params, step = best_params(with_validation, str(tmp_path), again.state)
  assert step == 10
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), seen[1][1])


def test_spent_patience_starts_the_wsd_decay_and_its_end_stops_training(tmp_path):
  # Its own experiment: training in this module donates the fixture's initial state.
  config = synthetic.get_config("runlocal")
  config.update(num_steps=40, eval_every=5, patience=2, log_every=5)
  config.optimizer.update(schedule="wsd", decay_fraction=0.6)
  experiment = setup_experiment(from_mapping(config.to_dict()))
  # Validation improves until step 10, then stalls: patience 2 is spent at step 20, so the rate
  # decays from step 20 over 0.6 as many steps, and training stops at step 32, not 40; the last
  # step is validated too, though not a multiple of eval_every.
  scores = {5: 0.1, 10: 0.3, 15: 0.2, 20: 0.25, 25: 0.35, 30: 0.4, 32: 0.45}
  seen = []

  def validate(params):
    seen.append(min(5 * (len(seen) + 1), 32))
    return scores[seen[-1]]

  trained = train(experiment, str(tmp_path), validate)
  assert (int(trained.state.step), trained.stopped) == (32, loop.STOPPED_AFTER_DECAY)
  assert seen == [5, 10, 15, 20, 25, 30, 32]
  assert schedule.current_window(trained.state.opt_state) == (20, 32)
  assert checkpoint.best_validation(checkpoint.make_best_manager(str(tmp_path))) == (32, 0.45)
  # The step that started the decay is saved, with its window, for a resumed run to follow.
  manager = checkpoint.make_manager(str(tmp_path), experiment.run.checkpoint)
  assert 20 in manager.all_steps()
  # Re-running the same command does not train on: the decay has ended.
  again = train(experiment, str(tmp_path), validate)
  assert (int(again.state.step), again.stopped, len(seen)) == (32, loop.STOPPED_AFTER_DECAY, 7)
  # Killed after step 20, a run resumes into the same decay and ends where this one did.
  resumed_dir = tmp_path / "resumed"
  shutil.copytree(tmp_path / "checkpoints", resumed_dir / "checkpoints")
  for step in manager.all_steps():
    if step > 20:
      shutil.rmtree(resumed_dir / "checkpoints" / str(step))
  resumed = train(experiment, str(resumed_dir), lambda params: 0.0)
  assert (int(resumed.state.step), resumed.stopped) == (32, loop.STOPPED_AFTER_DECAY)
  jax.tree.map(np.testing.assert_array_equal, resumed.state.params, again.state.params)


def test_the_wall_clock_cap_saves_and_stops_at_a_log_step(tmp_path):
  # Its own experiment: training in this module donates the fixture's initial state.
  config = synthetic.get_config("runlocal")
  config.max_train_minutes = 1e-9  # up at the first look
  config.log_every = 5
  experiment = setup_experiment(from_mapping(config.to_dict()))
  trained = train(experiment, str(tmp_path))
  assert (int(trained.state.step), trained.stopped) == (5, loop.STOPPED_BY_TIME)
  assert checkpoint.make_manager(str(tmp_path), experiment.run.checkpoint).latest_step() == 5


@pytest.mark.slow
def test_generation_report_on_the_synthetic_world(synthetic_experiment):
  experiment = synthetic_experiment
  run, model = experiment.run, experiment.model
  config = dataclasses.replace(run.generation, vectors=(1, 2), budget_k=4, budget_points=3)
  # Fresh parameters: training in this module donates the experiment's initial state.
  batch = example_batch(model, 2, 2, 3)
  params = {"params": initial_params(model, batch)}
  report = evaluate_generation(
    model,
    params["params"],
    experiment.data,
    config,
    experiment.data.eval_users,
    run.eval_batch_size,
    run.serving.merge_cosine,
  )
  rows = {(r["method"], r["vectors"]): r for r in report["tokens"]}
  # One vector: both methods issue the same single "next action" query.
  for key in ("recall", "hit_rate", "unique_share"):
    assert rows["multi_token", 1][key] == rows["autoregressive", 1][key]
  conditioning = report["conditioning"]
  assert [p["budget"] for p in conditioning["budgets"]] == [
    {"click": 4, "save": 0},
    {"click": 2, "save": 2},
    {"click": 0, "save": 4},
  ]
  # The oracle's best list for an outcome has the highest true rate of that outcome.
  for name in ("click", "save"):
    best = conditioning["oracle_best"][name][f"true_{name}_rate"]
    assert best >= max(conditioning[c][f"true_{name}_rate"] for c in ("any", "click", "save"))
