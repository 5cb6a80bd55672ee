"""Generic action tables: a CSV or Parquet file, one action a row, in columns the caller names."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from unipinrec.data.columnar import read_text
from unipinrec.data.interactions import DataFormatError, Interactions
from unipinrec.data.sasrec import SASREC_OUTCOMES
from unipinrec.data.tables import (
  PathLike,
  Table,
  csv_table,
  existing_file,
  parquet_table,
  parse_any_seconds,
  parse_int64,
)
from unipinrec.data.text_values import (
  Categories,
  any_seconds,
  categories,
  int64s,
  matches,
  stripped,
)
from unipinrec.errors import ConfigError

ACTIONS_LAYOUTS = "a CSV file with a header line (.tsv: tab-separated) or a .parquet file"
_WRITTEN_INT = r"^(0|-?[1-9][0-9]{0,17})$"  # `_written_int`'s spellings that fit in 18 digits
_LONG_WRITTEN_INT = r"^-?[1-9][0-9]{18,}$"


@dataclasses.dataclass(frozen=True)
class _Actions:
  """A table's columns as arrays, however the file was read; categories on demand."""

  path: str
  users: np.ndarray  # [rows] int64
  items: np.ndarray  # [rows] int64, or str where one id is not an integer as written
  timestamps: np.ndarray  # [rows] int64
  lines: np.ndarray  # [rows] int64
  # The stripped values of the "outcome" or "surface" column, raising at an empty one.
  categories: Callable[[str], Categories]
  error: Callable[[int | None, str | None, str], DataFormatError]


def _valid_rows(actions: _Actions, valid: np.ndarray, why: str) -> np.ndarray:
  """Rows to keep; raises at the first line of a user none of whose rows is valid (`why` not)."""
  if valid.all():
    return np.arange(len(actions.users))
  ids, first, inverse = np.unique(actions.users, return_index=True, return_inverse=True)
  kept = np.bincount(inverse, weights=valid, minlength=len(ids))
  if (kept == 0).any():
    row = int(first[kept == 0].min())
    user = int(actions.users[row])
    raise actions.error(int(actions.lines[row]), "user", f"user {user} has no valid action: {why}")
  return np.flatnonzero(valid)


def _category(value: Any) -> str:
  if value is None:
    raise TypeError
  text = str(value).strip()
  if not text:
    raise ValueError
  return text


def _written_int(value: Any) -> int:
  """An integer as written: "7" or 7, not "007" or "+7", whose spelling an int would lose."""
  number = parse_int64(value)
  if isinstance(value, str) and value.strip() != str(number):
    raise ValueError
  return number


def _item_ids(table: Table, name: str) -> np.ndarray:
  """Item ids as int64 when every one is an integer as written, else as strings (e.g. ASINs)."""
  try:
    return np.asarray(table.convert(name, _written_int, "an integer"), np.int64)
  except DataFormatError:
    return np.asarray(table.convert(name, _category, f"{name} must not be empty"), str)


def _table_categories(table: Table, name: str, key: str) -> Categories:
  values = table.convert(name, _category, f"{key} must not be empty")
  index: dict[str, int] = {}
  codes = [index.setdefault(value, len(index)) for value in values]
  return Categories(np.asarray(codes, np.int64), list(index))


def _table_actions(table: Table, columns: Mapping[str, str]) -> _Actions:
  """The columns of a table read line by line (or from Parquet), raising at a bad value."""
  users = table.ints(columns["user"])
  items = _item_ids(table, columns["item"])
  times = table.convert(
    columns["timestamp"], parse_any_seconds, "timestamp must be integer seconds or an ISO-8601 time"
  )
  return _Actions(
    path=table.path,
    users=users,
    items=items,
    timestamps=np.asarray(times, np.int64),
    lines=np.asarray(table.lines, np.int64),
    categories=lambda key: _table_categories(table, columns[key], key),
    error=table.error,
  )


def _columnar_item_ids(strings: pa.ChunkedArray) -> np.ndarray | None:
  """`_item_ids` of a column of strings, or None where the line parser must decide."""
  text = stripped(strings)
  if matches(text, _WRITTEN_INT).all():
    return int64s(text)
  if matches(text, _LONG_WRITTEN_INT).any():  # int64 or not: the line parser knows
    return None
  found = categories(text)
  return None if found is None else np.asarray(found.values, str)[found.codes]


def _columnar_actions(
  file: pathlib.Path, delimiter: str, columns: Mapping[str, str]
) -> _Actions | None:
  """The columns of a usual CSV file through pyarrow, or None where any value is unusual."""
  table = read_text(file, delimiter, list(dict.fromkeys(columns.values())))
  if table is None:
    return None
  users = int64s(table.columns[columns["user"]])
  items = None if users is None else _columnar_item_ids(table.columns[columns["item"]])
  timestamps = None if items is None else any_seconds(table.columns[columns["timestamp"]])
  if timestamps is None:
    return None
  found = {}
  for key in ("outcome", "surface"):
    if key in columns:
      found[key] = categories(table.columns[columns[key]])
      if found[key] is None:
        return None
  return _Actions(
    path=str(file),
    users=users,
    items=items,
    timestamps=timestamps,
    lines=table.lines,
    categories=found.__getitem__,
    error=functools.partial(DataFormatError, str(file)),
  )


def _indices(found: Categories, names: Sequence[str]) -> np.ndarray:
  """[rows] int32: each row's index in `names` (the last, where one repeats), or -1."""
  index = {name: i for i, name in enumerate(names)}
  return np.asarray([index.get(value, -1) for value in found.values], np.int32)[found.codes]


def _sorted_values(values: Sequence[str]) -> list[str]:
  """Distinct values, in numeric order when every one is an integer (ties in text order)."""
  distinct = sorted(set(values))
  try:
    return sorted(distinct, key=int)
  except ValueError:
    return distinct


def read_actions_table(
  path: PathLike, columns: Mapping[str, str], outcome_names: Sequence[str] | None = None
) -> Interactions:
  """A CSV (with header; .tsv: tab-separated) or Parquet table of actions, one row each.

  `columns` maps "user", "item", "timestamp" and optionally "outcome" and "surface" to the
  table's column names. User ids are integers; item ids are integers when every one is written
  as one, else strings (ASINs, or ids with leading zeros); timestamps are integer seconds or
  ISO-8601 times (naive ones are UTC). Outcomes are the distinct values of the outcome column,
  sorted (as numbers when all are integers), unless `outcome_names` is given: then rows with
  any other outcome are dropped, and a user left with no row is an error. Surfaces are mapped
  to 0..S-1 in the same sorted order, kept in `surface_names`.
  """
  columns = dict(columns.items())
  unknown = set(columns) - {"user", "item", "timestamp", "outcome", "surface"}
  missing = {"user", "item", "timestamp"} - set(columns)
  if unknown or missing:
    raise ConfigError(
      f"columns needs 'user', 'item', 'timestamp' and optionally 'outcome' and 'surface'; "
      f"missing {sorted(missing)}, unknown {sorted(unknown)}"
    )
  if outcome_names is not None and "outcome" not in columns:
    raise ValueError("outcome_names needs an 'outcome' column in columns")
  file = existing_file(path, ACTIONS_LAYOUTS)
  suffix = file.suffix.lower()
  if suffix == ".parquet":
    actions = _table_actions(parquet_table(file, list(dict.fromkeys(columns.values()))), columns)
  else:
    delimiter = "\t" if suffix == ".tsv" else ","
    actions = _columnar_actions(file, delimiter, columns) or _table_actions(
      csv_table(file, delimiter), columns
    )

  outcomes = np.zeros(len(actions.users), np.int32)
  names = SASREC_OUTCOMES  # no outcome column: every row is an engagement
  valid = np.ones(len(actions.users), bool)
  if "outcome" in columns:
    found = actions.categories("outcome")
    names = tuple(_sorted_values(found.values)) if outcome_names is None else tuple(outcome_names)
    outcomes = _indices(found, names)
    valid = outcomes >= 0
  rows = _valid_rows(actions, valid, f"no row's outcome is one of {names}")

  surfaces, surface_names = None, ()
  if "surface" in columns:
    found = actions.categories("surface")
    present = np.unique(found.codes[rows])
    surface_names = tuple(_sorted_values([found.values[code] for code in present.tolist()]))
    surfaces = _indices(found, surface_names)[rows]
  return Interactions(
    path=actions.path,
    users=actions.users[rows],
    items=actions.items[rows],
    timestamps=actions.timestamps[rows],
    outcomes=outcomes[rows],
    outcome_names=names,
    lines=actions.lines[rows],
    surfaces=surfaces,
    surface_names=surface_names,
  )
