"""Amazon Games (the SASRec paper's "Games", SASRec format) under PROTOCOL.md.

Launch (from the repository root; the file defaults to ../shared/data/amazon-games/games.txt):
  python -m experiments.train --config=experiments/configs/games.py --workdir=runs/games
Any other SASRec-format file: experiments/configs/sequences.py, whose variants (such as the
`games.py:sasrec_ce` baseline) this config takes too.
"""

import ml_collections

from experiments.configs import sequences


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The run configuration; `variant` as in `sequences.get_config`."""
  return sequences.get_config(variant, relative="amazon-games/games.txt")
