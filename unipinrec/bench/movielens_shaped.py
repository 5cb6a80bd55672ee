"""Synthetic logs in ML-20M's layout and shape, for timing the readers at any size.

`write_movielens_shaped` writes `ratings.csv` (`userId,movieId,rating,timestamp`) and
`movies.csv` (`movieId,title,genres`) as ML-20M ships them: per 20M rows about 138,493 users
and 26,744 films (both scale with the rows), at least 20 ratings per user where the rows allow,
a long tail of user activity and of film popularity, half-star ratings in ML-20M's mix, integer
unix seconds between 1995 and 2015, each user's rows contiguous and roughly in time order.
Rows are drawn and written in chunks of users with NumPy and pyarrow's CSV writer, so memory
stays bounded whatever the size.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from unipinrec.data.movielens import ML100K_GENRES

ML20M_ROWS, ML20M_USERS, ML20M_MOVIES = 20_000_263, 138_493, 26_744
MIN_RATINGS = 20  # ML-20M keeps users with at least 20 ratings
FIRST_SECOND, LAST_SECOND = 789_652_009, 1_427_784_002  # ML-20M's first and last rating
STARS = tuple(f"{stars / 2:.1f}" for stars in range(1, 11))  # "0.5" ... "5.0"
# ML-20M's share of each half star, 0.5 to 5.0.
STAR_SHARES = np.array([1.2, 3.4, 1.4, 7.2, 4.4, 21.3, 10.5, 27.8, 7.6, 15.2]) / 100
# ML-20M spells ML-100K's genres so, less "unknown", and adds IMAX.
GENRES = tuple(g.replace("Children's", "Children") for g in ML100K_GENRES[1:]) + ("IMAX",)
_CHUNK_ROWS = 2_000_000  # rows drawn and written at a time
# No field of ratings.csv needs quotes; the header is written apart, unquoted as in ML-20M.
_WRITE = pa_csv.WriteOptions(include_header=False, quoting_style="none")


def _user_counts(rows: int, users: int, rng: np.random.Generator) -> np.ndarray:
  """[users] ratings per user, long-tailed, each at least MIN_RATINGS where rows allow, sum rows."""
  floor = min(MIN_RATINGS, rows // users)
  weights = rng.lognormal(0.0, 1.2, users)
  extra = np.floor(weights / weights.sum() * (rows - floor * users)).astype(np.int64)
  counts = floor + extra
  counts[rng.choice(users, rows - int(counts.sum()), replace=False)] += 1
  return counts


def _movie_ids(movies: int, rng: np.random.Generator) -> np.ndarray:
  """[movies] ids in popularity order: sparse over 1..5 x movies, like ML-20M's up to 131,262."""
  return rng.permutation(rng.choice(np.arange(1, 5 * movies + 1), movies, replace=False))


def _ratings_chunk(
  counts: np.ndarray, first_user: int, movie_ids: np.ndarray, rng: np.random.Generator
) -> pa.Table:
  """The rows of users first_user.. with `counts` ratings each, as ratings.csv's columns."""
  rows = int(counts.sum())
  starts = np.cumsum(counts) - counts
  # A user rates in bursts: gaps of minutes within a session, sometimes weeks between them.
  gaps = rng.exponential(300.0, rows) * np.where(rng.random(rows) < 0.02, 2_000.0, 1.0)
  elapsed = np.cumsum(gaps)
  elapsed -= np.repeat(elapsed[starts], counts)
  span = np.maximum(elapsed[starts + counts - 1], 1.0)
  begin = rng.uniform(FIRST_SECOND, LAST_SECOND, len(counts))
  # Squeezed into what is left of 1995-2015; a little jitter leaves a few rows out of order.
  scale = np.minimum(1.0, (LAST_SECOND - begin) / span)
  seconds = np.repeat(begin, counts) + elapsed * np.repeat(scale, counts)
  seconds += rng.normal(0.0, 30.0, rows)
  # Film popularity: a Zipf-like tail over the films in popularity order.
  ranks = np.arange(1, len(movie_ids) + 1)
  cdf = np.cumsum(1.0 / (ranks + 20.0) ** 0.9)
  picks = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(rows)), len(movie_ids) - 1)
  stars = rng.choice(len(STARS), rows, p=STAR_SHARES)
  return pa.table(
    {
      "userId": np.repeat(np.arange(first_user, first_user + len(counts)), counts),
      "movieId": movie_ids[picks],
      "rating": pa.array(STARS).take(pa.array(stars)),
      "timestamp": np.clip(seconds, FIRST_SECOND, LAST_SECOND).astype(np.int64),
    }
  )


def _write_movies(path: pathlib.Path, movie_ids: np.ndarray, rng: np.random.Generator) -> None:
  """movies.csv: "Title (year)" (some with a comma, quoted), one to three "|"-joined genres."""
  ids = np.sort(movie_ids)
  years = rng.integers(1915, 2015, len(ids))
  picks = rng.integers(0, len(GENRES), (len(ids), 3))
  kinds = rng.integers(0, 4, len(ids))  # 0: "(no genres listed)", as ML-20M has a few
  with path.open("w", newline="") as file:
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(("movieId", "title", "genres"))
    rows = zip(ids.tolist(), years.tolist(), picks.tolist(), kinds.tolist(), strict=True)
    for movie, year, row, k in rows:
      title = f"Film {movie}, The ({year})" if movie % 7 == 0 else f"Film {movie} ({year})"
      genres = "|".join(dict.fromkeys(GENRES[g] for g in row[:k])) or "(no genres listed)"
      writer.writerow((movie, title, genres))


def write_movielens_shaped(folder: pathlib.Path, rows: int, seed: int = 0) -> pathlib.Path:
  """Writes `rows` ML-20M-shaped ratings (ratings.csv) and their films (movies.csv) in `folder`.

  Users and films scale with `rows` from ML-20M's counts (module docstring); the same `rows`
  and `seed` give the same files. Returns `folder`, created if absent.
  """
  if rows < 1:
    raise ValueError(f"rows={rows}; expected at least 1")
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  users = max(1, round(ML20M_USERS * rows / ML20M_ROWS))
  movie_ids = _movie_ids(max(1, round(ML20M_MOVIES * rows / ML20M_ROWS)), rng)
  counts = _user_counts(rows, users, rng)
  # Chunks of whole users, about _CHUNK_ROWS rows each.
  bounds = np.searchsorted(np.cumsum(counts), np.arange(_CHUNK_ROWS, rows, _CHUNK_ROWS))
  edges = np.unique(np.r_[0, bounds + 1, users].clip(0, users))
  schema = pa.schema(
    [
      ("userId", pa.int64()),
      ("movieId", pa.int64()),
      ("rating", pa.string()),
      ("timestamp", pa.int64()),
    ]
  )
  with (folder / "ratings.csv").open("wb") as file:
    file.write(b"userId,movieId,rating,timestamp\n")
    with pa_csv.CSVWriter(file, schema, write_options=_WRITE) as writer:
      for start, end in zip(edges[:-1], edges[1:], strict=True):
        writer.write_table(_ratings_chunk(counts[start:end], int(start) + 1, movie_ids, rng))
  _write_movies(folder / "movies.csv", movie_ids, rng)
  return folder
