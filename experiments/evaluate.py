"""Evaluates a run's best validated (else newest) checkpoint; rewrites WORKDIR/results.json.

  python -m experiments.evaluate --workdir=runs/synthetic

The run's configuration is read from WORKDIR/config.json, written by training.
It holds WORKDIR's lock like the training: while one runs there it is refused
with one line on stderr and exit status 2.
"""

import os
import time

from absl import flags

from experiments import cli, huge_pages, launch
from unipinrec import records
from unipinrec.run import RESULTS_FILE, evaluate_workdir

_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "A training run's work directory.")


def main(argv):
  del argv
  started = (time.time(), records.git_commit())  # the code this process loaded
  run = launch.load_run_config(_WORKDIR.value)
  with launch.workdir_locked(_WORKDIR.value):  # a training there would rewrite results.json
    document = evaluate_workdir(run, _WORKDIR.value, launch.command("evaluate"), started)
  launch.log_summary(document, os.path.join(_WORKDIR.value, RESULTS_FILE))


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
