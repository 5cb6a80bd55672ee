"""Recommends for users read as JSON lines; writes one JSON line of ranked items per user.

  python -m experiments.recommend --bundle=bundles/synthetic --users=users.jsonl --out=recs.jsonl
  python -m experiments.recommend --workdir=runs/synthetic --users=users.jsonl --out=recs.jsonl

Serves either a bundle written by `python -m experiments.export` (nothing of training is
read) or a training work directory's best validated (else newest) checkpoint, from the
usearch index in WORKDIR/index, built there first when absent (settings: the run config's
`index` block); give exactly one of --bundle and --workdir. unipinrec/serving/batch.py
documents the line formats.

A user line that is not valid JSON or has a bad field gets an error record at its place in
OUT; every other line is answered. Then the launcher exits with status 1 after one line on
stderr: "3 of 120 lines failed; see error records in OUT".
"""

import sys

from absl import flags, logging

from experiments import cli, huge_pages, launch
from unipinrec.serving import batch
from unipinrec.serving.bundle import Bundle

_BUNDLE = flags.DEFINE_string("bundle", None, "A serving bundle (python -m experiments.export).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's work directory.")
_USERS = flags.DEFINE_string("users", None, "JSON lines, one user per line.", required=True)
_OUT = flags.DEFINE_string("out", None, "Where the recommendations go (JSON lines).", required=True)
_REBUILD = flags.DEFINE_bool(
  "rebuild_index", False, "Rebuild WORKDIR/index from the checkpoint even if one exists."
)


def main(argv):
  del argv
  if (_BUNDLE.value is None) == (_WORKDIR.value is None):
    raise cli.CommandLineError("give exactly one of --bundle and --workdir")
  if _BUNDLE.value is not None and _REBUILD.value:
    raise cli.CommandLineError("--rebuild_index needs --workdir: a bundle's index is fixed")
  batch.check_users_file(_USERS.value)
  if _BUNDLE.value is not None:
    launch.prepare_process()
    recommender = Bundle.load(_BUNDLE.value).recommender
  else:
    run = launch.load_run_config(_WORKDIR.value)
    recommender = batch.workdir_recommender(_WORKDIR.value, _REBUILD.value, run)
  summary = batch.recommend_file(recommender, _USERS.value, _OUT.value)
  served = summary.lines - summary.failed
  logging.info("wrote recommendations for %d users to %s", served, _OUT.value)
  if summary.failed:
    print(
      f"{summary.failed} of {summary.lines} lines failed; see error records in {_OUT.value}",
      file=sys.stderr,
    )
    sys.exit(1)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
