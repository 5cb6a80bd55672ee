"""SASRec's text format: `user item` per line, positive integer ids, in time order."""

from __future__ import annotations

import numpy as np

from unipinrec.data.columnar import INT, read_numeric
from unipinrec.data.interactions import Interactions
from unipinrec.data.tables import PathLike, existing_file, split_table

SASREC_OUTCOMES = ("engaged",)
SASREC_LAYOUT = "a SASRec text file: `user item` per line, positive integer ids, in time order"
_NAMES = ("user", "item")


def read_sasrec(path: PathLike) -> Interactions:
  """SASRec's text format: `user item` per line, positive integer ids, a user's lines in time order.

  There are no times: each row's timestamp is its 0-based row index, so file order is time order.
  Every row is one outcome, `SASREC_OUTCOMES`.
  """
  file = existing_file(path, SASREC_LAYOUT)
  fast = read_numeric(file, None, _NAMES, {"user": INT, "item": INT})
  if fast is not None and all(fast.columns[name].min() > 0 for name in _NAMES):
    users, items, lines = fast.columns["user"], fast.columns["item"], fast.lines
  else:  # the line-by-line table names the first bad line and field
    table = split_table(file, None, _NAMES)
    users, items = table.ints("user", positive=True), table.ints("item", positive=True)
    lines = np.asarray(table.lines, np.int64)
  return Interactions(
    path=str(file),
    users=users,
    items=items,
    timestamps=np.arange(len(users), dtype=np.int64),
    outcomes=np.zeros(len(users), np.int32),
    outcome_names=SASREC_OUTCOMES,
    lines=lines,
  )
