"""Content vector files (.npy, .parquet, CSV) keyed by the data set's own item ids.

The layouts and their errors are `item_feature_files`' (its module docstring); this module
reads the rows, `item_feature_files` places them on internal ids.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from unipinrec.data.interactions import DataFormatError
from unipinrec.data.tables import (
  PathLike,
  existing_file,
  parquet_table,
  parse_finite_float,
  parse_int64,
)


@dataclasses.dataclass(frozen=True)
class ContentVectors:
  """The rows of a content file: ids as the logs spell them, and one vector each."""

  path: str
  ids: np.ndarray  # [R] int64, or str for a vocabulary of string ids
  vectors: np.ndarray  # [R, C] float32


def parse_item_ids(
  path: str, values: Sequence[Any], lines: Sequence[int], field: str, integer: bool
) -> np.ndarray:
  """Item ids of the logs' kind (int64 or str) from a file's `field`; a bad or repeated one is
  a `DataFormatError` naming its line."""
  parsed: list[Any] = []
  for value, line in zip(values, lines, strict=True):
    try:
      if integer:
        parsed.append(parse_int64(value.strip() if isinstance(value, str) else value))
        continue
      if value is None or not str(value).strip():
        raise ValueError
      parsed.append(str(value).strip())
    except (ValueError, TypeError, OverflowError):
      kind = "an integer, as the logs' ids are" if integer else "a non-empty id"
      raise DataFormatError(
        path, line, field, f"the item id must be {kind}, got {value!r}"
      ) from None
  ids = np.asarray(parsed, np.int64 if integer else str)
  order = np.argsort(ids, kind="stable")
  repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
  if len(repeated):
    first, again = order[repeated[0]], order[repeated[0] + 1]
    raise DataFormatError(
      path,
      int(lines[again]),
      field,
      f"item id {ids[again]!r} repeats the row on line {lines[first]}",
    )
  return ids


def _vectors(
  path: str, rows: list[Sequence[Any]], lines: Sequence[int], fields: list[str]
) -> np.ndarray:
  """[R, C] finite float32 numbers; the first bad value names its line and field."""
  try:
    vectors = np.asarray(rows, np.float64)
    if np.isfinite(vectors).all():
      return vectors.astype(np.float32)
  except (ValueError, TypeError):
    pass  # the slow path below names the bad value
  parsed = []
  for row, line in zip(rows, lines, strict=True):
    parsed.append([])
    for value, field in zip(row, fields, strict=True):
      try:
        parsed[-1].append(parse_finite_float(value))
      except (ValueError, TypeError):
        raise DataFormatError(
          path, line, field, f"expected a finite number, got {value!r}"
        ) from None
  return np.asarray(parsed, np.float32)


def _npy_content(path: pathlib.Path, integer: bool) -> ContentVectors:
  where = str(path)
  try:
    array = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as error:
    raise DataFormatError(where, None, None, f"unreadable .npy: {error}") from None
  if array.ndim != 2 or array.shape[1] < 2 or array.dtype.kind not in "iuf" or not len(array):
    raise DataFormatError(
      where,
      None,
      None,
      f"expected a 2-D numeric array [items, 1 + C], got {array.dtype} {array.shape}",
    )
  if not integer:
    raise DataFormatError(
      where, None, "#1", "a .npy holds numeric ids; these logs' ids are strings"
    )
  lines = np.arange(1, len(array) + 1)
  ids = array[:, 0]
  if array.dtype.kind == "f":
    whole = np.isfinite(ids) & (ids == np.floor(ids))
    if not whole.all():
      bad = int(np.argmax(~whole))
      raise DataFormatError(
        where, bad + 1, "#1", f"the item id must be an integer, got {ids[bad]!r}"
      )
  ids = parse_item_ids(where, ids.astype(np.int64).tolist(), lines, "#1", True)
  fields = [f"#{k}" for k in range(2, array.shape[1] + 1)]
  vectors = _vectors(where, array[:, 1:].tolist(), lines, fields)
  return ContentVectors(where, ids, vectors)


def _parquet_content(path: pathlib.Path, integer: bool) -> ContentVectors:
  import pyarrow.parquet as pq  # a dependency; imported here as only Parquet needs it

  where = str(path)
  try:
    names = pq.read_schema(path).names
  except Exception as error:  # pyarrow's errors for a file that is not Parquet vary
    raise DataFormatError(where, None, None, f"unreadable Parquet: {error}") from error
  if len(names) < 2:
    raise DataFormatError(where, None, None, f"expected an id and a vector column, got {names}")
  table = parquet_table(path, names[:2])
  id_field, vector_field = names[:2]
  ids = parse_item_ids(where, table.column(id_field), table.lines, id_field, integer)
  rows = table.column(vector_field)
  width = None
  for row, line in zip(rows, table.lines, strict=True):
    if not isinstance(row, list):
      raise DataFormatError(where, line, vector_field, f"expected a list of numbers, got {row!r}")
    width = len(row) if width is None else width
    if len(row) != width or not width:
      raise DataFormatError(
        where,
        line,
        vector_field,
        f"expected a vector of {width or 'one or more'} numbers, got {len(row)}",
      )
  vectors = _vectors(where, rows, table.lines, [vector_field] * width)
  return ContentVectors(where, ids, vectors)


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def _csv_content(path: pathlib.Path, integer: bool) -> ContentVectors:
  where = str(path)
  try:
    text = path.read_text(encoding="utf-8-sig")
  except UnicodeDecodeError as error:
    raise DataFormatError(where, None, None, f"not UTF-8 text: {error}") from None
  reader = csv.reader(io.StringIO(text, newline=""))
  fields, rows, lines = None, [], []
  for row in reader:
    if not any(part.strip() for part in row):
      continue
    if fields is None:
      if len(row) < 2:
        raise DataFormatError(where, reader.line_num, "#2", "expected an id and a vector")
      fields = [f"#{k}" for k in range(1, len(row) + 1)]
      if not any(_is_number(part) for part in row[1:]):
        fields = [part.strip() for part in row]  # a header line names the fields
        continue
    if len(row) != len(fields):
      missing = len(row) < len(fields)
      field = fields[len(row)] if missing else f"#{len(fields) + 1}"
      what = "is missing" if missing else "and on are extra"
      raise DataFormatError(
        where,
        reader.line_num,
        field,
        f"expected {len(fields)} fields (the id and {len(fields) - 1} numbers), got {len(row)}: "
        f"{field!r} {what}",
      )
    rows.append(row)
    lines.append(reader.line_num)
  if not rows:
    raise DataFormatError(where, None, None, "no content vectors in the file")
  ids = parse_item_ids(where, [row[0] for row in rows], lines, fields[0], integer)
  vectors = _vectors(where, [row[1:] for row in rows], lines, fields[1:])
  return ContentVectors(where, ids, vectors)


def read_content_vectors(path: PathLike, integer_ids: bool) -> ContentVectors:
  """A content file: .npy, .parquet, else CSV (`item_feature_files`' docstring has the layouts).

  Args:
    path: the file.
    integer_ids: the logs' ids are integers (else strings); the file's ids must be too.
  """
  file = existing_file(path, "a content vector file (.npy, .parquet, or CSV)")
  if file.suffix == ".npy":
    return _npy_content(file, integer_ids)
  if file.suffix == ".parquet":
    return _parquet_content(file, integer_ids)
  return _csv_content(file, integer_ids)
