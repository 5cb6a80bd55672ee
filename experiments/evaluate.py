"""Evaluates a run's best validated (else newest) checkpoint; rewrites WORKDIR/results.json.

  python -m experiments.evaluate --workdir=runs/synthetic

The run's configuration is read from WORKDIR/config.json, written by training.
"""

import os
import time

from absl import flags

from experiments import cli, launch
from unipinrec import huge_pages
from unipinrec.evaluation import report
from unipinrec.experiment import evaluate_state, restore_trained, write_results

_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "A training run's work directory.")


def main(argv):
  del argv
  start = time.time()
  start_commit = report.git_commit()  # the code this process loaded, whatever happens later
  run = launch.load_run_config(_WORKDIR.value)
  experiment, params, step, best_step = restore_trained(run, _WORKDIR.value)
  figures = evaluate_state(experiment, params)
  figures["best_step"] = best_step
  document = write_results(
    experiment,
    _WORKDIR.value,
    figures,
    step,
    launch.command("evaluate"),
    time.time() - start,
    start_commit,
  )
  launch.log_summary(document, os.path.join(_WORKDIR.value, "results.json"))


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
