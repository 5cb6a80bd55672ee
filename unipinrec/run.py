"""A run's orchestration: train (resuming) then evaluate, or evaluate a trained work directory;
both write WORKDIR/results.json with what produced it."""

from __future__ import annotations

import os
import time

import jax
from absl import logging

from unipinrec import records
from unipinrec.bench.peak_rss import peak_rss_bytes
from unipinrec.config import RunConfig, to_dict
from unipinrec.evaluation.report import evaluate_state, validation_target
from unipinrec.train.experiment import (
  Experiment,
  best_params,
  restore_trained,
  setup_experiment,
)
from unipinrec.train.loop import train
from unipinrec.train.preemption import Preempted

RESULTS_FILE = "results.json"


def _write_results(
  experiment: Experiment,
  workdir: str,
  params,
  step: int,
  best_step: int | None,
  command: str,
  started: tuple[float, str],
  stopped: str | None = None,
) -> dict:
  """Evaluates `params`, writes `workdir/results.json` atomically and returns its content.

  `started` is (time.time(), records.git_commit()) read when the process started: the code
  that ran. A checkout changed during the run adds `git_commit_at_end`. `stopped` says why
  training ended (`loop.STOPPED_*`); a re-evaluation knows none.
  """
  start_time, start_commit = started
  document = {
    **evaluate_state(experiment, params),
    "best_step": best_step,
    "step": step,
    **({"stopped": stopped} if stopped else {}),
    "config": to_dict(experiment.run),
    "command": command,
    **records.commit_record(start_commit),
    "seed": experiment.run.seed,
    "wall_seconds": time.time() - start_time,
    "peak_rss_mib": peak_rss_bytes() / 2**20,
    "devices": [str(d) for d in jax.devices()],
  }
  if jax.process_index() == 0:
    records.write_json_atomic(os.path.join(workdir, RESULTS_FILE), document)
  return document


def train_and_evaluate(
  run: RunConfig, workdir: str, command: str, started: tuple[float, str]
) -> dict | None:
  """Trains to `run.num_steps` (resuming from `workdir`'s newest checkpoint), then evaluates the
  best validated (else final) parameters and writes results.json.

  Returns:
    results.json's content, or None when a preemption notice stopped training after a save.
  """
  experiment = setup_experiment(run)
  try:
    trained = train(experiment, workdir, validation_target(experiment))
  except Preempted as notice:
    logging.warning("%s", notice)
    return None
  params, best_step = best_params(experiment, workdir, trained.state)
  step = int(trained.state.step)
  return _write_results(
    experiment, workdir, params, step, best_step, command, started, trained.stopped
  )


def evaluate_workdir(
  run: RunConfig, workdir: str, command: str, started: tuple[float, str]
) -> dict:
  """Evaluates a trained work directory's best validated (else newest) checkpoint and rewrites
  its results.json; `run` is the work directory's (`read_run_config`).

  Raises:
    MissingPathError: when `workdir` holds no checkpoint.
  """
  experiment, params, step, best_step = restore_trained(run, workdir)
  return _write_results(experiment, workdir, params, step, best_step, command, started)
