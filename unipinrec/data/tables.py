"""Rows of a local interaction file with the line of each, and the value parsers readers share.

A bad row raises `DataFormatError` naming the file, the line and the field; blank lines are
skipped, and a file that ends without a newline in the middle of a row is reported as truncated.
Text is read as UTF-8 with a fall back to latin-1, the encoding of ML-100K's u.item and ML-1M's
.dat files.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import math
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from unipinrec.data.columnar import header_names
from unipinrec.data.interactions import DataFormatError
from unipinrec.errors import MissingPathError

PathLike = str | os.PathLike

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TRUNCATED = " (the file ends without a newline here: it looks truncated)"


@dataclasses.dataclass
class Table:
  """Rows of one file as strings (or Parquet values), with their lines, for located errors."""

  path: str
  names: tuple[str, ...]  # column names as the file spells them (canonical names without header)
  columns: list[Sequence[Any]]
  lines: list[int]  # 1-based line of each row (Parquet: 1-based row number)
  header_line: int | None
  truncated_line: int | None  # the last line, where the file ends without a newline

  def __len__(self) -> int:
    return len(self.lines)

  def error(self, line: int | None, field: str | None, message: str) -> DataFormatError:
    """A `DataFormatError` at `line`, noting a truncated file when it is the last line."""
    if line is not None and line == self.truncated_line:
      message += _TRUNCATED
    return DataFormatError(self.path, line, field, message)

  def has(self, name: str) -> bool:
    """Whether the table has column `name`."""
    return name in self.names

  def column(self, name: str) -> Sequence[Any]:
    """The values of column `name`; a missing column is an error at the header."""
    if name not in self.names:
      raise DataFormatError(
        self.path,
        self.header_line,
        name,
        f"the header lacks column {name!r}; it has {', '.join(map(repr, self.names))}",
      )
    return self.columns[self.names.index(name)]

  def convert(self, name: str, parse: Callable[[Any], Any], expected: str) -> list[Any]:
    """`parse` on every value of a column; the first failure names its line."""
    values = self.column(name)
    out: list[Any] = []
    append = out.append
    for i, value in enumerate(values):
      try:
        append(parse(value))
      except (ValueError, TypeError, OverflowError):
        raise self.error(self.lines[i], name, f"{expected}, got {value!r}") from None
    return out

  def ints(self, name: str, positive: bool = False) -> np.ndarray:
    """An integer column as int64; `positive` also rejects ids <= 0."""
    kind = "a positive integer" if positive else "an integer"
    values = np.asarray(self.convert(name, parse_int64, f"{name} must be {kind}"), np.int64)
    if positive and len(values) and values.min() <= 0:
      i = int(np.argmax(values <= 0))
      raise self.error(self.lines[i], name, f"{name} must be {kind}, got {int(values[i])}")
    return values


def parse_int64(value: Any) -> int:
  """An integer that fits int64; a float must be whole, a bool or None is refused."""
  if isinstance(value, bool) or value is None:
    raise TypeError
  if isinstance(value, float) and not value.is_integer():
    raise ValueError
  number = int(value)
  if not _INT64_MIN <= number <= _INT64_MAX:
    raise OverflowError
  return number


def parse_finite_float(value: Any) -> float:
  """A finite number; a bool or None is refused."""
  if isinstance(value, bool) or value is None:
    raise TypeError
  number = float(value)
  if not math.isfinite(number):
    raise ValueError
  return number


def parse_flag(value: str) -> bool:
  """A "0" or "1" flag."""
  if value.strip() not in ("0", "1"):
    raise ValueError
  return value.strip() == "1"


def parse_numeric_seconds(value: Any) -> int:
  """Integer seconds; a float (RecBole's `timestamp:float`) is floored."""
  try:
    return parse_int64(value)
  except ValueError:
    return parse_int64(math.floor(parse_finite_float(value)))


def parse_any_seconds(value: Any) -> int:
  """Integer seconds, or an ISO-8601 time (naive times are UTC) as seconds since the epoch."""
  if isinstance(value, datetime.datetime):
    moment = value
  elif isinstance(value, datetime.date):
    moment = datetime.datetime(value.year, value.month, value.day)
  else:
    try:
      return parse_numeric_seconds(value)
    except ValueError:
      if not isinstance(value, str):
        raise
      moment = datetime.datetime.fromisoformat(value.strip())
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.UTC)
  return parse_int64(math.floor(moment.timestamp()))


def existing_file(path: PathLike, layout: str) -> pathlib.Path:
  """`path` as a file that exists; otherwise an error naming the `layout` expected."""
  file = pathlib.Path(path)
  if not file.is_file():
    what = "a folder, not a file" if file.is_dir() else "no such file"
    raise MissingPathError(f"{file}: {what}; expected {layout}")
  return file


def _read_text(path: pathlib.Path) -> str:
  data = path.read_bytes()
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError:
    return data.decode("latin-1")


def _count_error(
  path: str, line: int, names: Sequence[str], count: int, truncated: bool
) -> DataFormatError:
  extra = len(names) + 1
  if count < len(names):
    field, detail = names[count], f"{names[count]!r} is missing"
  else:
    field, detail = f"#{extra}", f"the fields from #{extra} on are extra"
  message = f"expected {len(names)} fields ({', '.join(names)}), got {count}: {detail}"
  return DataFormatError(path, line, field, message + (_TRUNCATED if truncated else ""))


def _empty_error(path: str, header: bool) -> DataFormatError:
  return DataFormatError(
    path, None, None, "the file is empty" + (": no data rows after the header" if header else "")
  )


def split_table(
  path: pathlib.Path, sep: str | None, names: Sequence[str] | None = None, recbole: bool = False
) -> Table:
  """A delimited text file; `names` None reads them from a header line (RecBole's `name:type`)."""
  where = str(path)
  text = _read_text(path)
  if not text.strip():
    raise _empty_error(where, False)
  if "\r" in text:
    text = text.replace("\r\n", "\n")
  raw = text.split("\n")
  complete = text.endswith("\n")
  if complete:
    raw.pop()  # the empty string after the last newline
  start, header_line = 0, None
  if names is None:
    while not raw[start].strip():
      start += 1
    header_line = start + 1
    names = header_names(raw[start], sep, recbole)
    start += 1
  names = tuple(names)
  width, last = len(names), len(raw) - 1
  rows, lines = [], []
  for i in range(start, len(raw)):
    parts = raw[i].split(sep)
    if len(parts) != width:
      if not raw[i].strip():
        continue
      raise _count_error(where, i + 1, names, len(parts), not complete and i == last)
    rows.append(parts)
    lines.append(i + 1)
  if not rows:
    raise _empty_error(where, header_line is not None)
  truncated = None if complete else last + 1
  return Table(where, names, list(zip(*rows, strict=True)), lines, header_line, truncated)


def csv_table(path: pathlib.Path, delimiter: str = ",") -> Table:
  """A CSV file with a header line; quoted fields may hold the delimiter or newlines."""
  where = str(path)
  text = _read_text(path)
  if not text.strip():
    raise _empty_error(where, False)
  complete = text.endswith(("\n", "\r"))
  physical_lines = text.count("\n") + (0 if complete else 1)
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
  names: tuple[str, ...] | None = None
  header_line, rows, lines, end = None, [], [], 0
  while True:
    try:
      row = next(reader)
    except StopIteration:
      break
    except csv.Error as error:
      raise DataFormatError(where, reader.line_num, None, f"unreadable CSV: {error}") from None
    line, end = end + 1, reader.line_num  # a quoted newline makes a row span lines
    if not row or (len(row) == 1 and not row[0].strip()):
      continue
    if names is None:
      names, header_line = tuple(name.strip() for name in row), line
    elif len(row) != len(names):
      raise _count_error(where, line, names, len(row), not complete and end == physical_lines)
    else:
      rows.append(row)
      lines.append(line)
  if not rows:
    raise _empty_error(where, names is not None)
  truncated = None if complete else lines[-1]
  assert names is not None  # rows imply a header
  return Table(where, names, list(zip(*rows, strict=True)), lines, header_line, truncated)


def parquet_table(path: pathlib.Path, names: Sequence[str]) -> Table:
  """The named columns of a Parquet file as Python values; rows are numbered from 1."""
  try:
    import pyarrow.parquet as pq
  except ImportError as error:
    raise ImportError(
      f"reading the Parquet file {path} needs the 'pyarrow' package: pip install pyarrow"
    ) from error
  where = str(path)
  try:
    present = pq.read_schema(path).names
    for name in names:
      if name not in present:
        raise DataFormatError(
          where, None, name, f"no column {name!r}; it has {', '.join(map(repr, present))}"
        )
    table = pq.read_table(path, columns=list(names))
  except DataFormatError:
    raise
  except Exception as error:  # pyarrow's errors for a file that is not Parquet vary
    raise DataFormatError(where, None, None, f"unreadable Parquet: {error}") from error
  if table.num_rows == 0:
    raise _empty_error(where, False)
  columns = [table.column(name).to_pylist() for name in names]
  return Table(where, tuple(names), columns, list(range(1, table.num_rows + 1)), None, None)
