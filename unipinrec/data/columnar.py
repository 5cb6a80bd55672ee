"""Interaction files at C speed: pyarrow's multi-threaded CSV reader on usual files.

`read_numeric` parses a delimited file whose every field is a number into NumPy columns, and
`read_text` a CSV file's columns into pyarrow strings (`text_values` parses those), or each
returns None when anything about the file is unusual or pyarrow refuses it. The caller then
reads the file with the line-by-line parser of `unipinrec.data.tables`, which names the first
bad line and field: only that path raises, so the error contract is the same either way.

Usual means: no byte-order mark, "\\n" line ends with one after the last line, no blank line,
and data rows made only of digits, signs, points, exponents, one separator byte and newlines
(no quotes, no other whitespace, no letters). On such rows every value pyarrow accepts is one
Python's `int` / `float` read the same way (pyarrow's integers also take hex, "0x10", which
Python's do not, and the byte set keeps that out), and every row is one line, so the lines
are the row numbers. The "::" of .dat files becomes a control byte that does not occur in them;
whitespace-separated files (u.data, SASRec) take their tab or space as the one separator, so a
run of separators, which Python's `str.split()` merges, makes an empty field and a fallback.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

INT, FLOAT, SECONDS = "int", "float", "seconds"  # the kinds of column `read_numeric` reads
_NUMBER_BYTES = b"0123456789+-.eE\n"
_UNIT_SEPARATOR = b"\x1f"  # stands for a .dat file's "::" separator
_EXACT_FLOAT_INTEGERS = 2.0**53  # integers a float64 holds exactly
_SCAN_BYTES = 1 << 24  # bytes scanned for newlines at a time


@dataclasses.dataclass(frozen=True)
class NumericTable:
  """The columns `read_numeric` was asked for, and the 1-based line of each row."""

  columns: dict[str, np.ndarray]  # INT, SECONDS: int64; FLOAT: float64, finite
  lines: np.ndarray  # [rows] int64


@dataclasses.dataclass(frozen=True)
class TextTable:
  """The columns `read_text` was asked for, as the file spells them, and each row's line."""

  columns: dict[str, pa.ChunkedArray]  # strings
  lines: np.ndarray  # [rows] int64


def header_names(line: str, sep: str | None, recbole: bool) -> tuple[str, ...]:
  """Column names of a header line; RecBole's `name:type` keeps the name."""
  names = [name.strip() for name in line.split(sep)]
  return tuple(name.split(":", 1)[0] if recbole else name for name in names)


def _has_plain_lines(data: bytes, body_start: int) -> bool:
  """No byte-order mark, "\\n" line ends with one after the last line, no blank line, a body."""
  if data.startswith(codecs.BOM_UTF8) or not data.endswith(b"\n") or len(data) <= body_start:
    return False
  return not (data.startswith(b"\n") or b"\n\n" in data or b"\r" in data)


def _is_usual(data: bytes, body_start: int, separator: bytes) -> bool:
  if not _has_plain_lines(data, body_start):
    return False
  # Whatever is left once the allowed bytes are deleted must all come from the header.
  allowed = _NUMBER_BYTES + separator
  return data.translate(None, allowed) == data[:body_start].translate(None, allowed)


def _longest_line(data: bytes) -> int:
  """Bytes in the longest line of `data`, its newline included; `data` ends with one."""
  view = np.frombuffer(data, np.uint8)
  longest, previous_end = 0, -1
  for start in range(0, len(view), _SCAN_BYTES):  # in slices, so the scan's arrays stay small
    ends = np.flatnonzero(view[start : start + _SCAN_BYTES] == ord("\n")) + start
    if len(ends):
      longest = max(longest, int(ends[0]) - previous_end, int(np.diff(ends).max(initial=0)))
      previous_end = int(ends[-1])
  return longest


def _is_plain_text(data: bytes) -> bool:
  """No quote or NUL, UTF-8 throughout, and no line longer than Python's csv field limit."""
  if b'"' in data or b"\x00" in data:
    return False
  if not data.isascii():
    try:
      data.decode("utf-8")
    except UnicodeDecodeError:  # the slow path reads such a file as latin-1
      return False
  return _longest_line(data) <= csv.field_size_limit()


def _convert(
  data: bytes, skip: int, delimiter: bytes, names: Sequence[str], types: Mapping[str, pa.DataType]
) -> pa.Table | None:
  try:
    return pa_csv.read_csv(
      pa.py_buffer(data),
      read_options=pa_csv.ReadOptions(column_names=list(names), skip_rows=skip),
      parse_options=pa_csv.ParseOptions(
        delimiter=delimiter.decode(),
        quote_char=False,
        escape_char=False,
        newlines_in_values=False,
        ignore_empty_lines=False,
      ),
      convert_options=pa_csv.ConvertOptions(
        column_types=dict(types),
        include_columns=list(types),
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
      ),
    )
  except (pa.ArrowException, ValueError):  # any refusal: the slow path finds what is wrong
    return None


@dataclasses.dataclass(frozen=True)
class _Layout:
  """A file's bytes (a .dat file's "::" replaced), its column names and where its rows start."""

  data: bytes
  names: tuple[str, ...]
  skip: int  # lines before the first row: 1 with a header line, else 0
  body_start: int  # the byte where the first row starts
  separator: bytes


def _read_layout(
  path: pathlib.Path,
  sep: str | None,
  names: Sequence[str] | None,
  recbole: bool,
  needed: Sequence[str],
) -> _Layout | None:
  """The bytes and names of a file with unique names, all of `needed` among them, else None."""
  try:
    data = path.read_bytes()
  except OSError:
    return None
  first_end = data.find(b"\n")
  skip, body_start = 0, 0
  if names is None:
    try:
      header = data[: max(first_end, 0)].decode("utf-8")
    except UnicodeDecodeError:
      return None
    names, skip, body_start = header_names(header, sep, recbole), 1, first_end + 1
  first_row = data[body_start : data.find(b"\n", body_start)]
  separator = {None: b"\t" if b"\t" in first_row else b" ", "::": _UNIT_SEPARATOR}.get(sep)
  separator = separator or sep.encode()
  if sep == "::":
    if _UNIT_SEPARATOR in data:
      return None
    data = data.replace(b"::", _UNIT_SEPARATOR)
    body_start = data.find(b"\n") + 1 if skip else 0
  if set(needed) - set(names) or len(set(names)) != len(names):
    return None
  return _Layout(data, tuple(names), skip, body_start, separator)


def read_numeric(
  path: pathlib.Path,
  sep: str | None,
  names: Sequence[str] | None,
  kinds: Mapping[str, str],
  recbole: bool = False,
) -> NumericTable | None:
  """The `kinds` columns (name -> INT, FLOAT or SECONDS) of a usual file, else None.

  `sep` and `names` are `tables.split_table`'s: `sep` None splits on whitespace, `names` None
  reads them from the header line. INT is `tables.parse_int64` of the text, FLOAT
  `parse_finite_float`, SECONDS `parse_numeric_seconds` (integers, else floats floored).
  """
  layout = _read_layout(path, sep, names, recbole, list(kinds))
  if layout is None or not _is_usual(layout.data, layout.body_start, layout.separator):
    return None
  types = {name: pa.float64() if kind == FLOAT else pa.int64() for name, kind in kinds.items()}
  table = _convert(layout.data, layout.skip, layout.separator, layout.names, types)
  floored = [name for name, kind in kinds.items() if kind == SECONDS]
  if table is None and floored:  # RecBole's `timestamp:float`: floats, floored
    floats = types | dict.fromkeys(floored, pa.float64())
    table = _convert(layout.data, layout.skip, layout.separator, layout.names, floats)
  skip = layout.skip
  del layout
  if table is None:
    return None
  columns = {}
  for name in kinds:  # each column dropped once copied, so the two copies never all coexist
    columns[name] = table.column(name).to_numpy()
    table = table.drop_columns([name])
  for name, values in columns.items():
    if values.dtype == np.float64 and not np.isfinite(values).all():
      return None
    if kinds[name] == SECONDS and values.dtype == np.float64:
      # Above 2**53 a float64 rounds an integer that Python's int would read exactly.
      if len(values) and np.abs(values).max() >= _EXACT_FLOAT_INTEGERS:
        return None
      columns[name] = np.floor(values).astype(np.int64)
  lines = np.arange(len(columns[name]), dtype=np.int64) + 1 + skip
  return NumericTable(columns, lines)


def read_text(path: pathlib.Path, delimiter: str, names: Sequence[str]) -> TextTable | None:
  """The `names` columns of a usual CSV file with a header line, as pyarrow strings, else None.

  The strings are the fields as `tables.csv_table` splits them: usual is as for `read_numeric`,
  any bytes but a quote or NUL, UTF-8 throughout, two columns or more (a lone blank field is a
  blank line to Python's csv) and no line over its field size limit, which it refuses.
  """
  layout = _read_layout(path, delimiter, None, False, names)
  if layout is None or len(layout.names) < 2:
    return None
  if not _has_plain_lines(layout.data, layout.body_start) or not _is_plain_text(layout.data):
    return None
  types = dict.fromkeys(names, pa.string())
  table = _convert(layout.data, layout.skip, layout.separator, layout.names, types)
  del layout
  if table is None:
    return None
  lines = np.arange(table.num_rows, dtype=np.int64) + 2  # the header is line 1
  return TextTable({name: table.column(name) for name in names}, lines)
