"""Writes a self-contained serving bundle of a training work directory.

  python -m experiments.export --workdir=runs/synthetic --out=bundles/synthetic

The bundle (layout: unipinrec/export/bundle_format.py) holds the served step's parameters
(no optimizer state), the model config, the item vocabulary, outcome and surface names, the
usearch index and the two serving computations exported with `jax.export` for each batch size
(the powers of two up to the run's `serving.batch_size`, which `experiments.serve` batches into);
`python -m experiments.recommend --bundle=OUT` serves it with nothing of training at hand.
Each export is a new version made current atomically: a crash leaves the previous one whole.
"""

from absl import flags, logging

from experiments import cli, huge_pages, launch
from unipinrec.export.bundle import DEFAULT_PLATFORMS, export_workdir

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's work directory.", required=True)
_OUT = flags.DEFINE_string("out", None, "The bundle directory (created if absent).", required=True)
_BATCH_SIZES = flags.DEFINE_list(
  "batch_sizes",
  [],
  "Users per call to export for, besides the powers of two up to the run's "
  "serving.batch_size and it (what a server's micro-batches use).",
)
_PLATFORMS = flags.DEFINE_list(
  "platforms", list(DEFAULT_PLATFORMS), "Where the exported computations may run."
)


def main(argv):
  del argv
  try:
    batch_sizes = [int(size) for size in _BATCH_SIZES.value]
  except ValueError as error:
    raise cli.CommandLineError(f"flag --batch_sizes: {error}") from None
  run = launch.load_run_config(_WORKDIR.value)
  path = export_workdir(_WORKDIR.value, _OUT.value, batch_sizes, _PLATFORMS.value, run)
  logging.info("wrote bundle %s", path)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
