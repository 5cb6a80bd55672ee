"""Recommends for users read as JSON lines; writes one JSON line of ranked items per user.

  python -m experiments.recommend --workdir=runs/synthetic --users=users.jsonl --out=recs.jsonl

Serves the run's best validated (else newest) checkpoint from the usearch
index in WORKDIR/index, built there first when absent (settings: the run
config's `index` block). unipinrec/serving/batch.py documents the line formats.
"""

from absl import flags, logging

from experiments import cli, launch
from unipinrec import huge_pages
from unipinrec.serving.batch import recommend_file

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's work directory.", required=True)
_USERS = flags.DEFINE_string("users", None, "JSON lines, one user per line.", required=True)
_OUT = flags.DEFINE_string("out", None, "Where the recommendations go (JSON lines).", required=True)
_REBUILD = flags.DEFINE_bool(
  "rebuild_index", False, "Rebuild WORKDIR/index from the checkpoint even if one exists."
)


def main(argv):
  del argv
  run = launch.load_run_config(_WORKDIR.value)
  served = recommend_file(_WORKDIR.value, _USERS.value, _OUT.value, _REBUILD.value, run)
  logging.info("wrote recommendations for %d users to %s", served, _OUT.value)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
