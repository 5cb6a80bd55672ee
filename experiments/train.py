"""Trains UniPinRec, evaluates it, and writes WORKDIR/results.json.

  python -m experiments.train --config=experiments/configs/synthetic.py --workdir=runs/synthetic

Re-running the same command resumes from the newest checkpoint in WORKDIR, on
any mesh (a newest checkpoint that does not restore is set aside, with a warning, for
the one before). On SIGTERM it saves at the next step and exits with status 0. The
work directory is locked while it runs: a second launch there is refused with one
line on stderr and exit status 2.
"""

import os
import time

from absl import flags

from experiments import cli, huge_pages, launch
from unipinrec import records
from unipinrec.run import RESULTS_FILE, train_and_evaluate

_CONFIG = cli.define_config_file(
  "config", launch.DEFAULT_CONFIG, "ml_collections config file, optionally `file.py:variant`."
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "Checkpoints, logs and results.")


def main(argv):
  del argv
  started = (time.time(), records.git_commit())  # the code this process loaded
  # Locked before config.json is written, so that a refused launch overwrites nothing.
  with launch.workdir_locked(_WORKDIR.value):
    run = launch.start(_CONFIG.value, _WORKDIR.value)
    document = train_and_evaluate(run, _WORKDIR.value, launch.command("train"), started)
  if document is not None:  # None: preempted after a save; exit 0 so the scheduler restarts it
    launch.log_summary(document, os.path.join(_WORKDIR.value, RESULTS_FILE))


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
