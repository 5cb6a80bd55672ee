"""The launcher end to end at small scale: config overrides, checkpoints, resume after a kill
or a preemption notice (SIGTERM)."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import flags
from hang_guard import HANG_SECONDS
from ml_collections import config_flags

from experiments.configs import synthetic
from unipinrec import checkpoint
from unipinrec.config import from_mapping
from unipinrec.data.pipeline import training_iterator
from unipinrec.errors import ConfigError
from unipinrec.train.experiment import abstract_state, setup_experiment

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "experiments" / "configs" / "synthetic.py")
# Long enough that the kill lands mid-run, with checkpoints every 20 steps.
SMALL_RUN = [
  f"--config={CONFIG}:runlocal",
  "--config.num_steps=160",
  "--config.checkpoint.every_steps=20",
]


def test_command_line_overrides_reach_the_run_config():
  argv = [
    "train",
    f"--config={CONFIG}:runlocal",
    "--config.model.embed_dim=24",
    "--config.step.loss.intra_session=true",
    "--config.optimizer.learning_rate=0.01",
  ]
  flag_values = flags.FlagValues()
  # The override flags are read from argv (sys.argv in a launcher).
  config_flags.DEFINE_config_file("config", CONFIG, flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  run = from_mapping(flag_values.config.to_dict())
  assert run.model.embed_dim == 24
  assert run.step.loss.intra_session is True
  assert run.optimizer.learning_rate == 0.01
  assert run.num_steps == 40  # from the runlocal variant
  with pytest.raises(ValueError, match="model.embed_dims"):
    from_mapping({"model": {"embed_dims": 3}})


def test_config_json_of_older_runs_names_the_renamed_field():
  with pytest.raises(
    ConfigError, match=r"unknown config field\(s\) config.step.loss.offset_logq_corr"
  ):
    from_mapping({"step": {"loss": {"offset_logq_correction": True}}})


def test_bad_config_values_name_their_field():
  with pytest.raises(ConfigError, match="config.model: kernel must be one of"):
    from_mapping({"model": {"kernel": "cuda"}})
  with pytest.raises(ConfigError, match="model.num_items is the data's"):
    from_mapping({"model": {"num_items": 10}})


@pytest.fixture(scope="module")
def small_experiment():
  return setup_experiment(from_mapping(synthetic.get_config("runlocal").to_dict()))


def test_checkpoint_round_trip_with_data_position(small_experiment, tmp_path):
  experiment = small_experiment
  run = experiment.run
  iterator = training_iterator(experiment.data.train_examples, run.batch_size, run.seed)
  for _ in range(3):
    next(iterator)
  state = jax.tree.map(lambda x: x + 1 if x.dtype.kind == "f" else x, experiment.initial_state)
  manager = checkpoint.make_manager(str(tmp_path), run.checkpoint)
  checkpoint.save(manager, 3, state, iterator, force=True)
  manager.wait_until_finished()
  expected_next = next(iterator)

  fresh = training_iterator(experiment.data.train_examples, run.batch_size, run.seed)
  restored = checkpoint.restore_latest(
    checkpoint.make_manager(str(tmp_path), run.checkpoint), abstract_state(experiment), fresh
  )
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sharding == want.sharding
  for name, value in next(fresh).items():
    np.testing.assert_array_equal(value, expected_next[name], name)


def _truncate_largest_file(directory: pathlib.Path) -> pathlib.Path:
  """Cuts the largest file under `directory` to half its size (a disk fault); returns it."""
  largest = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)
  return largest


def test_restore_skips_unreadable_steps_and_refuses_when_none_restores(small_experiment, tmp_path):
  experiment = small_experiment
  run = experiment.run
  iterator = training_iterator(experiment.data.train_examples, run.batch_size, run.seed)
  manager = checkpoint.make_manager(str(tmp_path), run.checkpoint)
  states = {}
  for step in (3, 5):
    states[step] = jax.tree.map(
      lambda x, step=step: x + step if x.dtype.kind == "f" else x, experiment.initial_state
    )
    checkpoint.save(manager, step, states[step], iterator, force=True)
  manager.wait_until_finished()
  _truncate_largest_file(tmp_path / "checkpoints" / "5" / "state")

  reader = checkpoint.make_manager(str(tmp_path), run.checkpoint)
  restored = checkpoint.restore_latest(reader, abstract_state(experiment), None)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(states[3]), strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "5"]  # a reader renames nothing

  _truncate_largest_file(tmp_path / "checkpoints" / "3" / "state")
  with pytest.raises(checkpoint.UnreadableCheckpoints, match=r"restores \(steps \[5, 3\] failed"):
    checkpoint.restore_latest(reader, abstract_state(experiment), None, set_aside_unreadable=True)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "5"]


def _train(workdir: pathlib.Path, **popen) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(
    [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *SMALL_RUN],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    **popen,
  )


def _finish(process: subprocess.Popen) -> None:
  _, stderr = process.communicate(timeout=HANG_SECONDS)
  assert process.returncode == 0, stderr[-3000:]


def _saved_steps(workdir: pathlib.Path) -> list[int]:
  directory = workdir / "checkpoints"
  return (
    sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    if directory.exists()
    else []
  )


def _figures(workdir: pathlib.Path) -> dict:
  document = json.loads((workdir / "results.json").read_text())
  return {k: document[k] for k in ("retrieval", "retrieval_unfiltered", "ranking", "step")}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> pathlib.Path:
  """A work directory of SMALL_RUN trained without interruption."""
  workdir = tmp_path_factory.mktemp("straight")
  _finish(_train(workdir))
  return workdir


def _wait_for_mid_run_checkpoint(process: subprocess.Popen, workdir: pathlib.Path) -> None:
  deadline = time.time() + HANG_SECONDS
  while not any(20 <= s < 160 for s in _saved_steps(workdir)):
    assert process.poll() is None, "training ended before a mid-run checkpoint appeared"
    assert time.time() < deadline, "no checkpoint before the hang guard"
    time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_then_rerun_ends_like_an_uninterrupted_run(straight_run, tmp_path):
  killed = tmp_path / "killed"
  process = _train(killed)
  try:
    _wait_for_mid_run_checkpoint(process, killed)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  interrupted_at = max(_saved_steps(killed))
  assert interrupted_at < 160 and not (killed / "results.json").exists()

  _finish(_train(killed))
  assert _figures(killed) == _figures(straight_run)
  assert interrupted_at in range(20, 160)


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_exits_0_and_the_rerun_ends_like_an_uninterrupted_run(
  straight_run, tmp_path
):
  stopped = tmp_path / "stopped"
  process = _train(stopped)
  try:
    _wait_for_mid_run_checkpoint(process, stopped)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=HANG_SECONDS)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert process.returncode == 0, stderr[-3000:]
  saved_at = max(_saved_steps(stopped))
  assert f"preempted: saved step {saved_at}, relaunch to continue" in stderr
  assert 20 < saved_at < 160 and not (stopped / "results.json").exists()

  _finish(_train(stopped))
  assert _figures(stopped) == _figures(straight_run)


@pytest.mark.slow
def test_an_unreadable_newest_checkpoint_is_set_aside_and_the_rerun_ends_like_an_uninterrupted_run(
  straight_run, tmp_path
):
  workdir = tmp_path / "corrupt"
  shutil.copytree(straight_run, workdir)
  (workdir / "results.json").unlink()
  newest = workdir / "checkpoints" / "160"
  truncated = _truncate_largest_file(newest / "state")
  size = truncated.stat().st_size

  process = _train(workdir)
  _, stderr = process.communicate(timeout=HANG_SECONDS)
  assert process.returncode == 0, stderr[-3000:]
  assert f"checkpoint step 160 in {newest} does not restore, skipping it: " in stderr
  assert f"moved the unreadable checkpoint {newest} aside to {newest}.corrupt" in stderr
  assert "resumed from step 140" in stderr
  # Step 160 saved anew; the unreadable one kept as it was, where orbax does not list it.
  assert _saved_steps(workdir) == [120, 140, 160]
  aside = workdir / "checkpoints" / "160.corrupt" / truncated.relative_to(newest)
  assert aside.stat().st_size == size
  assert _figures(workdir) == _figures(straight_run)


def _launch(module: str, workdir: pathlib.Path, returncode: int = 0) -> str:
  """Runs `experiments.<module> --workdir=...`, checks its exit status, returns its stderr."""
  done = subprocess.run(
    [sys.executable, "-m", f"experiments.{module}", f"--workdir={workdir}"],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert done.returncode == returncode, done.stderr[-3000:]
  return done.stderr


@pytest.mark.slow
def test_evaluate_and_evaluate_generation_read_a_finished_run(straight_run, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(straight_run, workdir)
  (workdir / "results.json").unlink()
  _launch("evaluate", workdir)
  assert _figures(workdir) == _figures(straight_run)  # the checkpoint training evaluated
  _launch("evaluate_generation", workdir)
  generation = json.loads((workdir / "generation.json").read_text())
  assert generation["step"] == 160 and generation["tokens"]
  # A directory that is no run: a usage error that names the file, not a traceback.
  stderr = _launch("evaluate", tmp_path, returncode=2)
  assert f"{tmp_path}/config.json: no config.json" in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_ranking_gap_of_a_run_agrees_with_its_results(straight_run):
  _launch("ranking_gap", straight_run)
  gap = json.loads((straight_run / "ranking_gap.json").read_text())
  results = json.loads((straight_run / "results.json").read_text())
  # The same slates and scorers as the run's evaluation: its model and history oracle AUCs.
  assert gap["model"]["auc_engaged"] == pytest.approx(results["ranking"]["auc_engaged"], abs=1e-5)
  history_oracle = results["baselines"]["history_oracle"]["ranking"]["auc_engaged"]
  assert gap["reference"]["auc_engaged"] == pytest.approx(history_oracle, abs=1e-5)
  assert gap["reference"]["term_weights"]["r2"] > 0.9  # the oracle's logit is built from them
