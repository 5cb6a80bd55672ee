"""SASRec's text format: `user item` per line, positive integer ids, in time order."""

from __future__ import annotations

import numpy as np

from unipinrec.data.interactions import Interactions
from unipinrec.data.tables import PathLike, existing_file, split_table

SASREC_OUTCOMES = ("engaged",)
SASREC_LAYOUT = "a SASRec text file: `user item` per line, positive integer ids, in time order"


def read_sasrec(path: PathLike) -> Interactions:
  """SASRec's text format: `user item` per line, positive integer ids, a user's lines in time order.

  There are no times: each row's timestamp is its 0-based row index, so file order is time order.
  Every row is one outcome, `SASREC_OUTCOMES`.
  """
  table = split_table(existing_file(path, SASREC_LAYOUT), None, ("user", "item"))
  rows = len(table)
  return Interactions(
    path=table.path,
    users=table.ints("user", positive=True),
    items=table.ints("item", positive=True),
    timestamps=np.arange(rows, dtype=np.int64),
    outcomes=np.zeros(rows, np.int32),
    outcome_names=SASREC_OUTCOMES,
    lines=np.asarray(table.lines, np.int64),
  )
