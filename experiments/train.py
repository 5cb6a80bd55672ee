"""Trains UniPinRec, evaluates it, and writes WORKDIR/results.json.

  python -m experiments.train --config=experiments/configs/synthetic.py --workdir=runs/synthetic

Re-running the same command resumes from the newest checkpoint in WORKDIR, on
any mesh. On SIGTERM it saves at the next step and exits with status 0.
"""

import os
import time

from absl import flags, logging

from experiments import cli, launch
from unipinrec import huge_pages
from unipinrec.evaluation import report
from unipinrec.experiment import (
  best_params,
  evaluate_state,
  setup_experiment,
  validation_target,
  write_results,
)
from unipinrec.train.loop import train
from unipinrec.train.preemption import Preempted

_CONFIG = cli.define_config_file(
  "config", launch.DEFAULT_CONFIG, "ml_collections config file, optionally `file.py:variant`."
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "Checkpoints, logs and results.")


def main(argv):
  del argv
  start = time.time()
  start_commit = report.git_commit()  # the code this process loaded, whatever happens later
  run = launch.start(_CONFIG.value, _WORKDIR.value)
  experiment = setup_experiment(run)
  try:
    state = train(experiment, _WORKDIR.value, validation_target(experiment))
  except Preempted as notice:
    logging.warning("%s", notice)
    return  # exit status 0: the scheduler restarts the job, which resumes
  params, best_step = best_params(experiment, _WORKDIR.value, state)
  figures = evaluate_state(experiment, params)
  figures["best_step"] = best_step
  document = write_results(
    experiment,
    _WORKDIR.value,
    figures,
    int(state.step),
    launch.command("train"),
    time.time() - start,
    start_commit,
  )
  launch.log_summary(document, os.path.join(_WORKDIR.value, "results.json"))


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
