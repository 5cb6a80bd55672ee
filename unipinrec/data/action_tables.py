"""Generic action tables: a CSV or Parquet file, one action a row, in columns the caller names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
from unipinrec.errors import ConfigError

ACTIONS_LAYOUTS = "a CSV file with a header line (.tsv: tab-separated) or a .parquet file"


def _valid_rows(table: Table, users: np.ndarray, valid: np.ndarray, why: str) -> np.ndarray:
  """Rows to keep; raises at the first line of a user none of whose rows is valid (`why` not)."""
  if valid.all():
    return np.arange(len(users))
  ids, first, inverse = np.unique(users, return_index=True, return_inverse=True)
  kept = np.bincount(inverse, weights=valid, minlength=len(ids))
  if (kept == 0).any():
    row = int(first[kept == 0].min())
    raise table.error(
      table.lines[row], "user", f"user {int(users[row])} has no valid action: {why}"
    )
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


def _sorted_values(values: Sequence[str]) -> list[str]:
  """Distinct values, in numeric order when every one is an integer."""
  distinct = set(values)
  try:
    return sorted(distinct, key=int)
  except ValueError:
    return sorted(distinct)


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
    table = parquet_table(file, list(dict.fromkeys(columns.values())))
  else:
    table = csv_table(file, "\t" if suffix == ".tsv" else ",")
  users = table.ints(columns["user"])
  items = _item_ids(table, columns["item"])
  times = table.convert(
    columns["timestamp"], parse_any_seconds, "timestamp must be integer seconds or an ISO-8601 time"
  )
  timestamps = np.asarray(times, np.int64)

  outcomes = np.zeros(len(table), np.int32)
  names = SASREC_OUTCOMES  # no outcome column: every row is an engagement
  valid = np.ones(len(table), bool)
  if "outcome" in columns:
    values = table.convert(columns["outcome"], _category, "outcome must not be empty")
    names = tuple(_sorted_values(values)) if outcome_names is None else tuple(outcome_names)
    index = {name: i for i, name in enumerate(names)}
    outcomes = np.asarray([index.get(v, -1) for v in values], np.int32)
    valid = outcomes >= 0
  rows = _valid_rows(table, users, valid, f"no row's outcome is one of {names}")

  surfaces, surface_names = None, ()
  if "surface" in columns:
    values = table.convert(columns["surface"], _category, "surface must not be empty")
    kept = [values[row] for row in rows.tolist()]
    surface_names = tuple(_sorted_values(kept))
    index = {name: i for i, name in enumerate(surface_names)}
    surfaces = np.asarray([index[v] for v in kept], np.int32)
  return Interactions(
    path=table.path,
    users=users[rows],
    items=items[rows],
    timestamps=timestamps[rows],
    outcomes=outcomes[rows],
    outcome_names=names,
    lines=np.asarray(table.lines, np.int64)[rows],
    surfaces=surfaces,
    surface_names=surface_names,
  )
