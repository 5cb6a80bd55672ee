"""The raw interaction log every reader returns, before sequences and splits.

Readers keep original ids and file order; `unipinrec.data.sequences` sorts,
remaps ids and splits. Keeping the file's line numbers lets later stages
name the line behind a bad row.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unipinrec.errors import UserInputError


class DataFormatError(UserInputError, ValueError):
  """Bad input, with the file, the 1-based line and the field it concerns."""

  def __init__(self, path: str, line: int | None, field: str | None, message: str):
    where = path if line is None else f"{path}:{line}"
    what = f" field {field!r}:" if field else ""
    super().__init__(f"{where}:{what} {message}")
    self.path, self.line, self.field = path, line, field


@dataclasses.dataclass(frozen=True)
class Interactions:
  """One row per interaction, original ids, in file order.

  `outcomes` indexes `outcome_names` (every interaction is an engagement of
  some kind; "none" is never an interaction). `timestamps` are int64 seconds;
  a format without times (SASRec's) gives each user's row its position in
  the file, which keeps the file order as the time order.
  """

  path: str  # the file read, for messages
  users: np.ndarray  # [A] int64 original user ids
  items: np.ndarray  # [A] original item ids: int64, or str where an actions table spells them so
  timestamps: np.ndarray  # [A] int64
  outcomes: np.ndarray  # [A] int32 index into outcome_names
  outcome_names: tuple[str, ...]
  lines: np.ndarray  # [A] int64 1-based line number of each row in `path`
  ratings: np.ndarray | None = None  # [A] float32 where the format has them
  surfaces: np.ndarray | None = None  # [A] int32 where the format has them
  item_titles: dict[int, str] = dataclasses.field(default_factory=dict)  # original id -> title
  item_years: dict[int, int] = dataclasses.field(default_factory=dict)
  item_genres: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  surface_names: tuple[str, ...] = ()  # what each surface index stands for, where named

  def __len__(self) -> int:
    return len(self.users)
