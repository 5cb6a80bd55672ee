"""Reading a local interaction log in whichever format it is: MovieLens, SASRec text or a generic
action table (`unipinrec.data.movielens`, `.sasrec`, `.action_tables`).

Every reader takes a local path (nothing is downloaded) and returns an `Interactions` with the
original ids, the rows in file order and the 1-based line of each row. Duplicate rows and
out-of-order timestamps are kept as they are: sorting by time (ties in file order) and
deduplication belong to the sequence stage (`unipinrec.data.sequences`, PROTOCOL.md). Bad rows
raise `DataFormatError` naming the file, the line and the field (`unipinrec.data.tables`).
"""

from __future__ import annotations

import pathlib
from typing import Any

from unipinrec.data.action_tables import ACTIONS_LAYOUTS, read_actions_table
from unipinrec.data.interactions import DataFormatError, Interactions
from unipinrec.data.movielens import MOVIELENS_LAYOUTS, is_movielens_name, read_movielens
from unipinrec.data.sasrec import SASREC_LAYOUT, read_sasrec
from unipinrec.data.tables import PathLike
from unipinrec.errors import MissingPathError

FORMATS = ("auto", "movielens", "sasrec", "actions")


def _looks_like_sasrec(path: pathlib.Path) -> bool:
  """The first non-blank line is two integers."""
  with path.open("rb") as file:
    for raw in file:
      parts = raw.split()
      if parts:
        return len(parts) == 2 and all(p.lstrip(b"-+").isdigit() for p in parts)
  return True  # an empty .txt file: read_sasrec reports it


def read_interactions(path: PathLike, format: str = "auto", **kwargs: Any) -> Interactions:
  """Reads `path` with the reader `format` names: "movielens", "sasrec" or "actions".

  "auto" picks MovieLens for a folder or a u.data / *.inter / ratings.dat / ratings.csv file,
  SASRec for a .txt file whose first line is two integers, and the action table when `columns`
  is given. `kwargs` go to the reader (`columns`, `outcome_names` for "actions").
  """
  if format not in FORMATS:
    raise ValueError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
  file = pathlib.Path(path)
  if format == "auto":
    if "columns" in kwargs:
      format = "actions"
    elif file.is_dir() or is_movielens_name(file.name):
      format = "movielens"
    elif file.suffix == ".txt" and file.is_file() and _looks_like_sasrec(file):
      format = "sasrec"
    elif not file.exists():
      raise MissingPathError(
        f"{file}: no such file or folder; looked for MovieLens as {'; '.join(MOVIELENS_LAYOUTS)}; "
        f"{SASREC_LAYOUT} (.txt); {ACTIONS_LAYOUTS} (pass columns=)"
      )
    else:
      raise DataFormatError(
        str(file),
        None,
        None,
        f"cannot tell the format; pass format= one of {', '.join(FORMATS[1:])}",
      )
  if format == "movielens":
    return read_movielens(file, **kwargs)
  if format == "sasrec":
    return read_sasrec(file, **kwargs)
  return read_actions_table(file, **kwargs)
