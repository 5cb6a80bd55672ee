"""Readers for local interaction logs: MovieLens, SASRec text files and generic action tables.

Every reader takes a local path (nothing is downloaded) and returns an `Interactions` with the
original ids, the rows in file order and the 1-based line of each row. Duplicate rows and
out-of-order timestamps are kept as they are: sorting by time (ties in file order) and
deduplication belong to the sequence stage (`unipinrec.data.sequences`, PROTOCOL.md).

Blank lines are skipped; any other bad row raises `DataFormatError` naming the file, the line and
the field, and a file that ends without a newline in the middle of a row is reported as truncated.
Text is read as UTF-8 with a fall back to latin-1, the encoding of ML-100K's u.item and ML-1M's
.dat files. MovieLens titles lose their trailing "(year)", which goes to `item_years`, so the
titles match across layouts (RecBole's ml-100k.item already splits them).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import math
import os
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from unipinrec.data.interactions import DataFormatError, Interactions
from unipinrec.errors import ConfigError, MissingPathError

PathLike = str | os.PathLike

MOVIELENS_OUTCOMES = ("low", "high")
HIGH_RATING = 4.0  # PROTOCOL.md: a rating >= 4 is "high"; anything lower (3.5 too) is "low"
SASREC_OUTCOMES = ("engaged",)

# u.genre's names, in the order of u.item's 19 flags, for a copy without u.genre.
ML100K_GENRES = (
  "unknown",
  "Action",
  "Adventure",
  "Animation",
  "Children's",
  "Comedy",
  "Crime",
  "Documentary",
  "Drama",
  "Fantasy",
  "Film-Noir",
  "Horror",
  "Musical",
  "Mystery",
  "Romance",
  "Sci-Fi",
  "Thriller",
  "War",
  "Western",
)

MOVIELENS_LAYOUTS = (
  "u.data with u.item and u.genre (ML-100K; also its u1.base ... ub.test splits)",
  "<name>.inter with <name>.item (RecBole atomic files, e.g. ml-100k.inter)",
  "ratings.dat with movies.dat (ML-1M, ML-10M)",
  "ratings.csv with movies.csv (ML-20M, ML-25M, ML-32M)",
)
SASREC_LAYOUT = "a SASRec text file: `user item` per line, positive integer ids, in time order"
ACTIONS_LAYOUTS = "a CSV file with a header line (.tsv: tab-separated) or a .parquet file"
FORMATS = ("auto", "movielens", "sasrec", "actions")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TRUNCATED = " (the file ends without a newline here: it looks truncated)"
# "Title (1995)", "Title (1975-1979)": the year is the first one.
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")
_ML100K_DATA = re.compile(r"^u(\d*|[a-z])\.(data|base|test)$")


@dataclasses.dataclass
class _Table:
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
    if line is not None and line == self.truncated_line:
      message += _TRUNCATED
    return DataFormatError(self.path, line, field, message)

  def has(self, name: str) -> bool:
    return name in self.names

  def column(self, name: str) -> Sequence[Any]:
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
    values = np.asarray(self.convert(name, _int64, f"{name} must be {kind}"), np.int64)
    if positive and len(values) and values.min() <= 0:
      i = int(np.argmax(values <= 0))
      raise self.error(self.lines[i], name, f"{name} must be {kind}, got {int(values[i])}")
    return values


def _int64(value: Any) -> int:
  if isinstance(value, bool) or value is None:
    raise TypeError
  if isinstance(value, float) and not value.is_integer():
    raise ValueError
  number = int(value)
  if not _INT64_MIN <= number <= _INT64_MAX:
    raise OverflowError
  return number


def _finite_float(value: Any) -> float:
  if isinstance(value, bool) or value is None:
    raise TypeError
  number = float(value)
  if not math.isfinite(number):
    raise ValueError
  return number


def _flag(value: str) -> bool:
  if value.strip() not in ("0", "1"):
    raise ValueError
  return value.strip() == "1"


def _numeric_seconds(value: Any) -> int:
  """Integer seconds; a float (RecBole's `timestamp:float`) is floored."""
  try:
    return _int64(value)
  except ValueError:
    return _int64(math.floor(_finite_float(value)))


def _any_seconds(value: Any) -> int:
  """Integer seconds, or an ISO-8601 time (naive times are UTC) as seconds since the epoch."""
  if isinstance(value, datetime.datetime):
    moment = value
  elif isinstance(value, datetime.date):
    moment = datetime.datetime(value.year, value.month, value.day)
  else:
    try:
      return _numeric_seconds(value)
    except ValueError:
      if not isinstance(value, str):
        raise
      moment = datetime.datetime.fromisoformat(value.strip())
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.UTC)
  return _int64(math.floor(moment.timestamp()))


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


def _split_table(
  path: pathlib.Path, sep: str | None, names: Sequence[str] | None = None, recbole: bool = False
) -> _Table:
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
    header = [name.strip() for name in raw[start].split(sep)]
    names = tuple(name.split(":", 1)[0] if recbole else name for name in header)
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
  return _Table(where, names, list(zip(*rows, strict=True)), lines, header_line, truncated)


def _csv_table(path: pathlib.Path, delimiter: str = ",") -> _Table:
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
  return _Table(where, names, list(zip(*rows, strict=True)), lines, header_line, truncated)


def _parquet_table(path: pathlib.Path, names: Sequence[str]) -> _Table:
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
  return _Table(where, tuple(names), columns, list(range(1, table.num_rows + 1)), None, None)


def _valid_rows(table: _Table, users: np.ndarray, valid: np.ndarray, why: str) -> np.ndarray:
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


# MovieLens.


@dataclasses.dataclass
class _Items:
  titles: dict[int, str] = dataclasses.field(default_factory=dict)
  years: dict[int, int] = dataclasses.field(default_factory=dict)
  genres: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)

  def add(self, item: int, title: str, year: int | None, genres: tuple[str, ...]) -> None:
    self.titles[item] = title
    if year is not None:
      self.years[item] = year
    self.genres[item] = genres


def _title_year(title: str) -> tuple[str, int | None]:
  """ "Toy Story (1995)" -> ("Toy Story", 1995); a title without a year stays whole."""
  match = _TITLE_YEAR.match(title)
  if not match or not match[1]:
    return title.strip(), None
  return match[1], int(match[2])


def _ml100k_items(item_path: pathlib.Path, genre_path: pathlib.Path) -> _Items:
  """u.item: id|title (year)|release date|video date|url|19 genre flags (u.genre's order)."""
  genres = ML100K_GENRES
  if genre_path.is_file():
    genre_table = _split_table(genre_path, "|", ("genre", "index"))
    indices = genre_table.ints("index")
    genres = tuple(str(genre_table.column("genre")[i]).strip() for i in np.argsort(indices))
  names = ("item", "title", "release_date", "video_release_date", "url", *genres)
  table = _split_table(item_path, "|", names)
  items, out = table.ints("item"), _Items()
  titles, dates = table.column("title"), table.column("release_date")
  flags = [table.convert(g, _flag, f"{g} must be a 0/1 flag") for g in genres]
  for row, item in enumerate(items.tolist()):
    title, year = _title_year(titles[row])
    date = dates[row].strip()
    if year is None and re.fullmatch(r".*\d{4}", date):
      year = int(date[-4:])
    out.add(item, title, year, tuple(g for g, f in zip(genres, flags, strict=True) if f[row]))
  return out


def _recbole_items(path: pathlib.Path) -> _Items:
  """RecBole's <name>.item: item_id, movie_title, release_year, class (space-separated genres)."""
  table = _split_table(path, "\t", recbole=True)
  items, out = table.ints("item_id"), _Items()
  blank = [""] * len(table)
  titles = table.column("movie_title") if table.has("movie_title") else blank
  years = table.column("release_year") if table.has("release_year") else blank
  genres = table.column("class") if table.has("class") else blank
  for row, item in enumerate(items.tolist()):
    year = years[row].strip()
    # ml-100k.item spells an unknown year "unkonwn" and has one "V".
    out.add(
      item, titles[row].strip(), int(year) if year.isdigit() else None, tuple(genres[row].split())
    )
  return out


def _movies_items(table: _Table, item: str, title: str, genres: str) -> _Items:
  """movies.dat / movies.csv: id, "Title (year)", "Genre|Genre" ("(no genres listed)": none)."""
  items, out = table.ints(item), _Items()
  titles, genre_lists = table.column(title), table.column(genres)
  for row, item_id in enumerate(items.tolist()):
    name, year = _title_year(titles[row])
    listed = genre_lists[row].strip()
    kinds = () if listed in ("", "(no genres listed)") else tuple(listed.split("|"))
    out.add(item_id, name, year, kinds)
  return out


def _movielens_interactions(
  table: _Table, user: str, item: str, rating: str, timestamp: str, items: _Items
) -> Interactions:
  ratings = np.asarray(table.convert(rating, _finite_float, "rating must be a number"))
  times = table.convert(timestamp, _numeric_seconds, "timestamp must be integer seconds")
  return Interactions(
    path=table.path,
    users=table.ints(user),
    items=table.ints(item),
    timestamps=np.asarray(times, np.int64),
    outcomes=(ratings >= HIGH_RATING).astype(np.int32),
    outcome_names=MOVIELENS_OUTCOMES,
    lines=np.asarray(table.lines, np.int64),
    ratings=ratings.astype(np.float32),
    item_titles=items.titles,
    item_years=items.years,
    item_genres=items.genres,
  )


def _movielens_file(path: pathlib.Path) -> pathlib.Path:
  """The ratings file of a MovieLens folder, or `path` itself when it is one."""
  looked_for = "; ".join(MOVIELENS_LAYOUTS)
  if path.is_dir():
    for candidate in (path / "u.data", path / f"{path.name}.inter"):
      if candidate.is_file():
        return candidate
    inter = sorted(path.glob("*.inter"))
    if len(inter) > 1:
      raise DataFormatError(
        str(path), None, None, f"several .inter files and none named {path.name}.inter: {inter}"
      )
    for candidate in (*inter, path / "ratings.dat", path / "ratings.csv"):
      if candidate.is_file():
        return candidate
    raise MissingPathError(
      f"{path}: no MovieLens ratings file in this folder; looked for {looked_for}"
    )
  if not path.exists():
    raise MissingPathError(f"{path}: no such file or folder; looked for MovieLens as {looked_for}")
  if _is_movielens_name(path.name):
    return path
  raise DataFormatError(
    str(path), None, None, f"not a MovieLens ratings file name; expected {looked_for}"
  )


def _is_movielens_name(name: str) -> bool:
  return (
    bool(_ML100K_DATA.match(name))
    or name.endswith(".inter")
    or name in ("ratings.dat", "ratings.csv")
  )


def read_movielens(path: PathLike) -> Interactions:
  """MovieLens ratings with their item side data; `path` is a MovieLens folder or ratings file.

  Layouts (`MOVIELENS_LAYOUTS`): ML-100K u.data, RecBole's <name>.inter, ML-1M/10M ratings.dat
  and ML-20M/25M/32M ratings.csv, each with its item file when present beside it. Outcomes are
  `MOVIELENS_OUTCOMES`: "high" for a rating >= 4, "low" otherwise; `ratings` keeps the stars.
  """
  file = _movielens_file(pathlib.Path(path))
  folder, name = file.parent, file.name
  if _ML100K_DATA.match(name):
    table = _split_table(file, None, ("user", "item", "rating", "timestamp"))
    item_file = folder / "u.item"
    items = _ml100k_items(item_file, folder / "u.genre") if item_file.is_file() else _Items()
    return _movielens_interactions(table, "user", "item", "rating", "timestamp", items)
  if name.endswith(".inter"):
    table = _split_table(file, "\t", recbole=True)
    item_file = file.with_suffix(".item")
    items = _recbole_items(item_file) if item_file.is_file() else _Items()
    return _movielens_interactions(table, "user_id", "item_id", "rating", "timestamp", items)
  if name == "ratings.dat":
    table = _split_table(file, "::", ("user", "item", "rating", "timestamp"))
    item_file = folder / "movies.dat"
    items = _Items()
    if item_file.is_file():
      movies = _split_table(item_file, "::", ("item", "title", "genres"))
      items = _movies_items(movies, "item", "title", "genres")
    return _movielens_interactions(table, "user", "item", "rating", "timestamp", items)
  table = _csv_table(file)
  item_file = folder / "movies.csv"
  items = _Items()
  if item_file.is_file():
    items = _movies_items(_csv_table(item_file), "movieId", "title", "genres")
  return _movielens_interactions(table, "userId", "movieId", "rating", "timestamp", items)


# SASRec.


def _existing_file(path: PathLike, layout: str) -> pathlib.Path:
  file = pathlib.Path(path)
  if not file.is_file():
    what = "a folder, not a file" if file.is_dir() else "no such file"
    raise MissingPathError(f"{file}: {what}; expected {layout}")
  return file


def read_sasrec(path: PathLike) -> Interactions:
  """SASRec's text format: `user item` per line, positive integer ids, a user's lines in time order.

  There are no times: each row's timestamp is its 0-based row index, so file order is time order.
  Every row is one outcome, `SASREC_OUTCOMES`.
  """
  table = _split_table(_existing_file(path, SASREC_LAYOUT), None, ("user", "item"))
  rows = len(table)
  return Interactions(
    path=table.path,
    users=table.ints("user", positive=True),
    items=table.ints("item", positive=True),
    timestamps=np.arange(rows, dtype=np.int64),
    outcomes=np.zeros(rows, np.int32),
    outcome_names=SASREC_OUTCOMES,
    lines=np.asarray(table.lines, np.int64),
  )


# Generic action tables.


def _category(value: Any) -> str:
  if value is None:
    raise TypeError
  text = str(value).strip()
  if not text:
    raise ValueError
  return text


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
  table's column names. Ids are integers; timestamps are integer seconds or ISO-8601 times
  (naive ones are UTC). Outcomes are the distinct values of the outcome column, sorted (as
  numbers when all are integers), unless `outcome_names` is given: then rows with any other
  outcome are dropped, and a user left with no row is an error. Surfaces are mapped to 0..S-1
  in the same sorted order, kept in `surface_names`.
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
  file = _existing_file(path, ACTIONS_LAYOUTS)
  suffix = file.suffix.lower()
  if suffix == ".parquet":
    table = _parquet_table(file, list(dict.fromkeys(columns.values())))
  else:
    table = _csv_table(file, "\t" if suffix == ".tsv" else ",")
  users = table.ints(columns["user"])
  items = table.ints(columns["item"])
  times = table.convert(
    columns["timestamp"], _any_seconds, "timestamp must be integer seconds or an ISO-8601 time"
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


# Dispatch.


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
    elif file.is_dir() or _is_movielens_name(file.name):
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
