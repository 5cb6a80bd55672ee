"""Evaluates a run's best validated (else newest) checkpoint; rewrites WORKDIR/results.json.

  python -m experiments.evaluate --workdir=runs/synthetic

The run's configuration is read from WORKDIR/config.json, written by training.
"""

import os
import time

from absl import app, flags

from experiments import launch
from unipinrec import checkpoint
from unipinrec.experiment import (
  abstract_state,
  best_params,
  evaluate_state,
  setup_experiment,
  write_results,
)

_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "A training run's work directory.")


def main(argv):
  del argv
  start = time.time()
  run = launch.load_run_config(_WORKDIR.value)
  experiment = setup_experiment(run)
  manager = checkpoint.make_manager(_WORKDIR.value, run.checkpoint)
  state = checkpoint.restore_latest(manager, abstract_state(experiment), data_iterator=None)
  if state is None:
    raise app.UsageError(f"no checkpoint in {os.path.abspath(_WORKDIR.value)}/checkpoints")
  params, best_step = best_params(experiment, _WORKDIR.value, state.params)
  figures = evaluate_state(experiment, params)
  figures["best_step"] = best_step
  document = write_results(
    experiment,
    _WORKDIR.value,
    figures,
    int(state.step),
    launch.command("evaluate"),
    time.time() - start,
  )
  launch.log_summary(document, os.path.join(_WORKDIR.value, "results.json"))


if __name__ == "__main__":
  app.run(main)
