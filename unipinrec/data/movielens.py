"""MovieLens ratings with their item side data, in each of the layouts MovieLens ships.

Titles lose their trailing "(year)", which goes to `item_years`, so the titles match across
layouts (RecBole's ml-100k.item already splits them).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from unipinrec.data.columnar import FLOAT, INT, SECONDS, read_numeric
from unipinrec.data.interactions import DataFormatError, Interactions
from unipinrec.data.tables import (
  PathLike,
  Table,
  csv_table,
  parse_finite_float,
  parse_flag,
  parse_numeric_seconds,
  split_table,
)
from unipinrec.errors import MissingPathError

MOVIELENS_OUTCOMES = ("low", "high")
HIGH_RATING = 4.0  # PROTOCOL.md: a rating >= 4 is "high"; anything lower (3.5 too) is "low"

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

# "Title (1995)", "Title (1975-1979)": the year is the first one.
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")
_ML100K_DATA = re.compile(r"^u(\d*|[a-z])\.(data|base|test)$")
# `movielens_side_table`'s feature columns by kind, as `item_feature_files` takes them.
SIDE_CATEGORICAL = ("year",)
SIDE_MULTI_VALUED = ("genres",)
# Release years per side-feature bucket: ml-100k's films crowd into 1990-1998, which decades
# would lump together.
YEAR_BUCKET_YEARS = 5
_RATINGS_NAMES = ("user", "item", "rating", "timestamp")  # u.data's and ratings.dat's columns


@dataclasses.dataclass
class _Items:
  path: str = ""  # the item file read, for messages
  titles: dict[int, str] = dataclasses.field(default_factory=dict)
  years: dict[int, int] = dataclasses.field(default_factory=dict)
  genres: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  lines: dict[int, int] = dataclasses.field(default_factory=dict)  # the item's line in `path`

  def add(
    self, item: int, title: str, year: int | None, genres: tuple[str, ...], line: int
  ) -> None:
    self.titles[item] = title
    if year is not None:
      self.years[item] = year
    self.genres[item] = genres
    self.lines[item] = line


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
    genre_table = split_table(genre_path, "|", ("genre", "index"))
    indices = genre_table.ints("index")
    genres = tuple(str(genre_table.column("genre")[i]).strip() for i in np.argsort(indices))
  names = ("item", "title", "release_date", "video_release_date", "url", *genres)
  table = split_table(item_path, "|", names)
  items, out = table.ints("item"), _Items(table.path)
  titles, dates = table.column("title"), table.column("release_date")
  flags = [table.convert(g, parse_flag, f"{g} must be a 0/1 flag") for g in genres]
  for row, item in enumerate(items.tolist()):
    title, year = _title_year(titles[row])
    date = dates[row].strip()
    if year is None and re.fullmatch(r".*\d{4}", date):
      year = int(date[-4:])
    kinds = tuple(g for g, f in zip(genres, flags, strict=True) if f[row])
    out.add(item, title, year, kinds, table.lines[row])
  return out


def _recbole_items(path: pathlib.Path) -> _Items:
  """RecBole's <name>.item: item_id, movie_title, release_year, class (space-separated genres)."""
  table = split_table(path, "\t", recbole=True)
  items, out = table.ints("item_id"), _Items(table.path)
  blank = [""] * len(table)
  titles = table.column("movie_title") if table.has("movie_title") else blank
  years = table.column("release_year") if table.has("release_year") else blank
  genres = table.column("class") if table.has("class") else blank
  for row, item in enumerate(items.tolist()):
    year = years[row].strip()
    # ml-100k.item spells an unknown year "unkonwn" and has one "V".
    year_number = int(year) if year.isdigit() else None
    out.add(item, titles[row].strip(), year_number, tuple(genres[row].split()), table.lines[row])
  return out


def _movies_items(table: Table, item: str, title: str, genres: str) -> _Items:
  """movies.dat / movies.csv: id, "Title (year)", "Genre|Genre" ("(no genres listed)": none)."""
  items, out = table.ints(item), _Items(table.path)
  titles, genre_lists = table.column(title), table.column(genres)
  for row, item_id in enumerate(items.tolist()):
    name, year = _title_year(titles[row])
    listed = genre_lists[row].strip()
    kinds = () if listed in ("", "(no genres listed)") else tuple(listed.split("|"))
    out.add(item_id, name, year, kinds, table.lines[row])
  return out


def _ratings_columns(
  file: pathlib.Path, sep: str | None, names: tuple[str, ...] | None, columns: tuple[str, ...]
) -> tuple[np.ndarray, ...]:
  """Users, items, ratings (float64), timestamps and lines of a ratings file named `columns`.

  pyarrow reads a usual file (`columnar.read_numeric`); anything else, and every bad row, goes
  through the line-by-line tables, whose errors name the line and field.
  """
  user, item, rating, timestamp = columns
  recbole = file.name.endswith(".inter")
  kinds = {user: INT, item: INT, rating: FLOAT, timestamp: SECONDS}
  fast = read_numeric(file, sep, names, kinds, recbole)
  if fast is not None:
    return (*(fast.columns[name] for name in columns), fast.lines)
  table = csv_table(file) if sep == "," else split_table(file, sep, names, recbole)
  ratings = np.asarray(table.convert(rating, parse_finite_float, "rating must be a number"))
  times = table.convert(timestamp, parse_numeric_seconds, "timestamp must be integer seconds")
  lines = np.asarray(table.lines, np.int64)
  return table.ints(user), table.ints(item), ratings, np.asarray(times, np.int64), lines


def _movielens_interactions(file: pathlib.Path, items: _Items) -> Interactions:
  """The ratings of `file`, in the layout its name gives, with `items`' side data."""
  name = file.name
  if _ML100K_DATA.match(name):
    layout = (None, _RATINGS_NAMES, _RATINGS_NAMES)
  elif name.endswith(".inter"):
    layout = ("\t", None, ("user_id", "item_id", "rating", "timestamp"))
  elif name == "ratings.dat":
    layout = ("::", _RATINGS_NAMES, _RATINGS_NAMES)
  else:
    layout = (",", None, ("userId", "movieId", "rating", "timestamp"))
  users, item_ids, ratings, timestamps, lines = _ratings_columns(file, *layout)
  return Interactions(
    path=str(file),
    users=users,
    items=item_ids,
    timestamps=timestamps,
    outcomes=(ratings >= HIGH_RATING).astype(np.int32),
    outcome_names=MOVIELENS_OUTCOMES,
    lines=lines,
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
  if is_movielens_name(path.name):
    return path
  raise DataFormatError(
    str(path), None, None, f"not a MovieLens ratings file name; expected {looked_for}"
  )


def is_movielens_name(name: str) -> bool:
  """Whether `name` is a MovieLens ratings file name of one of `MOVIELENS_LAYOUTS`."""
  return (
    bool(_ML100K_DATA.match(name))
    or name.endswith(".inter")
    or name in ("ratings.dat", "ratings.csv")
  )


def _items_beside(file: pathlib.Path) -> _Items:
  """The item side data of ratings file `file` (its layout's item file), empty without one."""
  folder, name = file.parent, file.name
  if _ML100K_DATA.match(name):
    item_file = folder / "u.item"
    return _ml100k_items(item_file, folder / "u.genre") if item_file.is_file() else _Items()
  if name.endswith(".inter"):
    item_file = file.with_suffix(".item")
    return _recbole_items(item_file) if item_file.is_file() else _Items()
  if name == "ratings.dat":
    item_file = folder / "movies.dat"
    if not item_file.is_file():
      return _Items()
    movies = split_table(item_file, "::", ("item", "title", "genres"))
    return _movies_items(movies, "item", "title", "genres")
  item_file = folder / "movies.csv"
  if not item_file.is_file():
    return _Items()
  return _movies_items(csv_table(item_file), "movieId", "title", "genres")


def read_movielens(path: PathLike) -> Interactions:
  """MovieLens ratings with their item side data; `path` is a MovieLens folder or ratings file.

  Layouts (`MOVIELENS_LAYOUTS`): ML-100K u.data, RecBole's <name>.inter, ML-1M/10M ratings.dat
  and ML-20M/25M/32M ratings.csv, each with its item file when present beside it. Outcomes are
  `MOVIELENS_OUTCOMES`: "high" for a rating >= 4, "low" otherwise; `ratings` keeps the stars.
  """
  file = _movielens_file(pathlib.Path(path))
  return _movielens_interactions(file, _items_beside(file))


def year_bucket(year: int) -> str:
  """The `YEAR_BUCKET_YEARS`-year span holding `year`: 1995 -> "1995-1999"."""
  start = year - year % YEAR_BUCKET_YEARS
  return f"{start}-{start + YEAR_BUCKET_YEARS - 1}"


def movielens_side_table(path: PathLike) -> Table:
  """A MovieLens folder's item side data as a side-feature table (`item_feature_files`).

  Columns: "item" (the film's id), "genres" (multi-valued: a tuple of genre names) and "year"
  (single-valued: `year_bucket` of the release year, "" where the item file has none). Rows
  and lines are the item file's, in its order.

  Raises:
    MissingPathError: the layout's item file (u.item, <name>.item, movies.dat or movies.csv)
      is not beside the ratings file.
  """
  file = _movielens_file(pathlib.Path(path))
  items = _items_beside(file)
  if not items.titles:
    raise MissingPathError(
      f"{file}: MovieLens side features need the item file beside it (u.item, <name>.item, "
      "movies.dat or movies.csv)"
    )
  ids = list(items.titles)
  genres = [items.genres[i] for i in ids]
  years = [year_bucket(items.years[i]) if i in items.years else "" for i in ids]
  lines = [items.lines[i] for i in ids]
  return Table(items.path, ("item", "genres", "year"), [ids, genres, years], lines, None, None)
