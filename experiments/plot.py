"""Draws WORKDIR/generation.json (from `experiments.evaluate_generation`) as PNGs in WORKDIR.

python -m experiments.plot --workdir=runs/synthetic
"""

import json
import os

from absl import flags, logging

from experiments import cli
from unipinrec.errors import MissingPathError
from unipinrec.evaluation.plots import plot_generation

_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "Holds generation.json.")


def main(argv):
  del argv
  path = os.path.join(_WORKDIR.value, "generation.json")
  if not os.path.exists(path):
    raise MissingPathError(f"{path}: missing; run python -m experiments.evaluate_generation first")
  with open(path) as f:
    document = json.load(f)
  for written in plot_generation(document, _WORKDIR.value):
    logging.info("wrote %s", written)


if __name__ == "__main__":
  cli.run(main)
