"""All-numeric interaction files at C speed: pyarrow's multi-threaded CSV reader on usual files.

`read_numeric` parses a delimited file whose every field is a number into NumPy columns, or
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


@dataclasses.dataclass(frozen=True)
class NumericTable:
  """The columns `read_numeric` was asked for, and the 1-based line of each row."""

  columns: dict[str, np.ndarray]  # INT, SECONDS: int64; FLOAT: float64, finite
  lines: np.ndarray  # [rows] int64


def header_names(line: str, sep: str | None, recbole: bool) -> tuple[str, ...]:
  """Column names of a header line; RecBole's `name:type` keeps the name."""
  names = [name.strip() for name in line.split(sep)]
  return tuple(name.split(":", 1)[0] if recbole else name for name in names)


def _is_usual(data: bytes, body_start: int, separator: bytes) -> bool:
  if data.startswith(codecs.BOM_UTF8) or not data.endswith(b"\n") or len(data) <= body_start:
    return False
  if data.startswith(b"\n") or b"\n\n" in data or b"\r" in data:
    return False
  # Whatever is left once the allowed bytes are deleted must all come from the header.
  allowed = _NUMBER_BYTES + separator
  return data.translate(None, allowed) == data[:body_start].translate(None, allowed)


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
  missing = set(kinds) - set(names)
  if missing or len(set(names)) != len(names) or not _is_usual(data, body_start, separator):
    return None
  types = {name: pa.float64() if kind == FLOAT else pa.int64() for name, kind in kinds.items()}
  table = _convert(data, skip, separator, names, types)
  floored = [name for name, kind in kinds.items() if kind == SECONDS]
  if table is None and floored:  # RecBole's `timestamp:float`: floats, floored
    table = _convert(data, skip, separator, names, types | dict.fromkeys(floored, pa.float64()))
  del data
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
