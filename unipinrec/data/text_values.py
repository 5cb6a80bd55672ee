"""The value parsers of `tables` on whole pyarrow string columns, as `columnar.read_text` gives.

Each function gives what its line-by-line parser gives on every value of the column, or None
when some value is spelled in a way it does not cover. The caller then reads the file line by
line, whose parsers take every spelling and name the line of a bad value, so the spellings
left out here change only the speed. Covered: integers of at most 18 digits with an optional
"-", decimals of at most 15 digits before the point, and ISO-8601 times
"YYYY-MM-DD[(T| )hh:mm[:ss[.f to ffffff]][Z|+hh:mm|-hh:mm]]". Left out: padding, "+", "_",
exponents, longer numbers, and every other spelling `int`, `float` or `fromisoformat` takes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# What Python's str.strip() strips: the characters whose str.isspace() is true.
PYTHON_SPACE = (
  "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
  "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_INTEGER = r"^-?[0-9]{1,18}$"  # 18 digits always fit int64
_DECIMAL = r"^-?[0-9]{1,15}\.[0-9]+$"  # below 2**53, so a float64 floors to the exact integer
_ISO_TIME = (
  r"^(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
  r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
  r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,6}))?)?"
  r"(?:Z|(?P<sign>[+-])(?P<zone_hour>[0-9]{2}):(?P<zone_minute>[0-9]{2}))?)?$"
)
# Microseconds from which a float timestamp near year 9999 may round up to the next second.
_ROUNDING_MICROSECONDS = 999_000


@dataclasses.dataclass(frozen=True)
class Categories:
  """A column of text as codes into its distinct values."""

  codes: np.ndarray  # [rows] integer index into `values`
  values: list[str]  # distinct


def matches(strings: pa.ChunkedArray, pattern: str) -> np.ndarray:
  """[rows] bool: whether each value matches the RE2 `pattern`."""
  return pc.match_substring_regex(strings, pattern).to_numpy()


def stripped(strings: pa.ChunkedArray) -> pa.ChunkedArray:
  """Each value as Python's str.strip() leaves it."""
  return pc.utf8_trim(strings, PYTHON_SPACE)


def _cast(strings: pa.ChunkedArray, kind: pa.DataType) -> np.ndarray:
  return pc.cast(strings, kind).to_numpy()


def int64s(strings: pa.ChunkedArray) -> np.ndarray | None:
  """`tables.parse_int64` of every value, as int64, or None."""
  return _cast(strings, pa.int64()) if matches(strings, _INTEGER).all() else None


def categories(strings: pa.ChunkedArray) -> Categories | None:
  """The stripped values as codes into the distinct ones, or None where one is empty."""
  encoded = pc.dictionary_encode(stripped(strings)).unify_dictionaries()
  values = encoded.chunk(0).dictionary.to_pylist()
  if "" in values:
    return None
  codes = np.concatenate([chunk.indices.to_numpy() for chunk in encoded.chunks])
  return Categories(codes, values)


def _whole_seconds(strings: pa.ChunkedArray) -> np.ndarray:
  return _cast(strings, pa.int64())


def _floored_seconds(strings: pa.ChunkedArray) -> np.ndarray:
  return np.floor(_cast(strings, pa.float64())).astype(np.int64)


def _iso_seconds(strings: pa.ChunkedArray) -> np.ndarray | None:
  """Seconds since the epoch of ISO times (naive ones UTC), floored, or None if one is invalid."""
  parts = pc.extract_regex(strings, _ISO_TIME)

  def number(name: str, digits: int = 2) -> np.ndarray:
    text = pc.struct_field(parts, name)
    if name == "fraction":  # ".5" is 500000 microseconds
      return _cast(pc.utf8_rpad(text, digits, "0"), pa.int64())
    return _cast(pc.utf8_lpad(text, digits, "0"), pa.int64())  # absent: 0

  year, month, day = number("year", 4), number("month"), number("day")
  hour, minute, second = number("hour"), number("minute"), number("second")
  zone_hour, zone_minute = number("zone_hour"), number("zone_minute")
  fits = (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)
  fits &= (hour <= 23) & (minute <= 59) & (second <= 59) & (zone_hour <= 23) & (zone_minute <= 59)
  fits &= number("fraction", 6) < _ROUNDING_MICROSECONDS
  if not fits.all():
    return None
  west = pc.equal(pc.struct_field(parts, "sign"), "-").to_numpy()
  zone = (zone_hour * 3600 + zone_minute * 60) * np.where(west, -1, 1)
  month_start = (year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + (month - 1)
  first_day = month_start.astype("datetime64[D]")
  if (day > ((month_start + 1).astype("datetime64[D]") - first_day).astype(np.int64)).any():
    return None
  days = first_day.astype(np.int64) + day - 1
  return days * 86400 + hour * 3600 + minute * 60 + second - zone


def any_seconds(strings: pa.ChunkedArray) -> np.ndarray | None:
  """`tables.parse_any_seconds` of every value, as int64, or None."""
  seconds = np.empty(len(strings), np.int64)
  rows = np.arange(len(strings))
  spellings = ((_INTEGER, _whole_seconds), (_DECIMAL, _floored_seconds), (_ISO_TIME, _iso_seconds))
  for pattern, parse in spellings:
    found = matches(strings, pattern)
    if found.any():
      whole = found.all()  # the usual case, one spelling throughout: no copy of the column
      values = parse(strings if whole else strings.filter(found))
      if values is None:
        return None
      seconds[rows[found]] = values
      if whole:
        return seconds
      strings, rows = strings.filter(~found), rows[~found]
  return None
