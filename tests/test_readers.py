"""The interaction readers: each layout on a tiny file, located errors, the public data sets."""

import pathlib
import sys

import numpy as np
import pytest

from unipinrec.data.action_tables import read_actions_table
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.movielens import ML100K_GENRES, read_movielens
from unipinrec.data.readers import read_interactions
from unipinrec.data.sasrec import read_sasrec

U_DATA = (
  "196\t242\t3\t881250949\n186\t302\t4\t891717742\n196\t377\t5\t878887116\n196\t242\t3\t800\n"
)


def _flags(*on: str) -> str:
  return "|".join("1" if genre in on else "0" for genre in ML100K_GENRES)


U_ITEM = (
  f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags('Comedy')}\n"
  f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{_flags('Crime', 'Film-Noir')}\n"
  f"377|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags('Drama', 'Musical')}\n"
  f"267|unknown||||{_flags('unknown')}\n"
)


def _write(path: pathlib.Path, text: str, encoding: str = "utf-8") -> pathlib.Path:
  path.write_bytes(text.encode(encoding))
  return path


def _check_error(error: DataFormatError, path: pathlib.Path, line: int | None, field: str | None):
  """The message and the attributes name the file, the line and the field."""
  message = str(error)
  assert str(path) in message and error.path == str(path)
  assert error.line == line
  if line is not None:
    assert f"{path}:{line}:" in message
  assert error.field == field
  if field is not None:
    assert repr(field) in message


# Layouts.


@pytest.mark.parametrize("with_genre_file", [True, False])
def test_ml100k_u_data_with_latin1_u_item(tmp_path, with_genre_file):
  _write(tmp_path / "u.data", U_DATA)
  _write(tmp_path / "u.item", U_ITEM, "latin-1")
  if with_genre_file:
    _write(tmp_path / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n")
  data = read_movielens(tmp_path)
  assert data.path == str(tmp_path / "u.data")
  np.testing.assert_array_equal(data.users, [196, 186, 196, 196])
  np.testing.assert_array_equal(data.items, [242, 302, 377, 242])
  np.testing.assert_array_equal(data.ratings, [3, 4, 5, 3])
  assert data.ratings.dtype == np.float32
  np.testing.assert_array_equal(data.timestamps, [881250949, 891717742, 878887116, 800])
  assert data.outcome_names == ("low", "high")
  np.testing.assert_array_equal(data.outcomes, [0, 1, 1, 0])
  np.testing.assert_array_equal(data.lines, [1, 2, 3, 4])
  assert data.item_titles == {
    242: "Kolya",
    302: "L.A. Confidential",
    377: "Misérables, Les",
    267: "unknown",
  }
  assert data.item_years == {242: 1996, 302: 1997, 377: 1995}
  assert data.item_genres[302] == ("Crime", "Film-Noir")
  assert data.item_genres[267] == ("unknown",)


def test_u_data_file_and_split_files_read_alike(tmp_path):
  _write(tmp_path / "u.data", U_DATA)
  _write(tmp_path / "u1.base", U_DATA)
  assert len(read_movielens(tmp_path / "u.data")) == 4
  assert len(read_movielens(tmp_path / "u1.base")) == 4
  assert read_movielens(tmp_path / "u1.base").item_titles == {}  # no u.item: no side data


def test_recbole_atomic_files(tmp_path):
  folder = tmp_path / "ml-100k"
  folder.mkdir()
  _write(
    folder / "ml-100k.inter",
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t4.0\t891717742.0\n",
  )
  _write(
    folder / "ml-100k.item",
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
    "267\tunkonwn\tunkonwn\tunknown\n",
  )
  data = read_movielens(folder)
  assert data.path == str(folder / "ml-100k.inter")
  np.testing.assert_array_equal(data.users, [196, 186])
  np.testing.assert_array_equal(data.items, [242, 302])
  np.testing.assert_array_equal(data.ratings, [3, 4])
  np.testing.assert_array_equal(data.timestamps, [881250949, 891717742])
  np.testing.assert_array_equal(data.outcomes, [0, 1])
  np.testing.assert_array_equal(data.lines, [2, 3])  # line 1 is the header
  assert data.item_titles == {242: "Kolya", 302: "L.A. Confidential", 267: "unkonwn"}
  assert data.item_years == {242: 1996, 302: 1997}
  assert data.item_genres[302] == ("Crime", "Film-Noir", "Mystery", "Thriller")


def test_ml1m_dat_files_with_half_stars(tmp_path):
  _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3.5::978302109\n2::1193::4::9\n")
  _write(
    tmp_path / "movies.dat",
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Léon (1994)::Action|Drama\n",
    "latin-1",
  )
  data = read_movielens(tmp_path / "ratings.dat")
  np.testing.assert_array_equal(data.users, [1, 1, 2])
  np.testing.assert_array_equal(data.ratings, [5, 3.5, 4])
  np.testing.assert_array_equal(data.outcomes, [1, 0, 1])  # 3.5 is low
  np.testing.assert_array_equal(data.timestamps, [978300760, 978302109, 9])
  assert data.item_titles == {1193: "One Flew Over the Cuckoo's Nest", 661: "Léon"}
  assert data.item_years == {1193: 1975, 661: 1994}
  assert data.item_genres == {1193: ("Drama",), 661: ("Action", "Drama")}


def test_ml25m_csv_files_with_quoted_titles(tmp_path):
  _write(
    tmp_path / "ratings.csv",
    "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n3,1,4.0,5\n",
  )
  _write(
    tmp_path / "movies.csv",
    "movieId,title,genres\n"
    '1,"American President, The (1995)",Comedy|Drama|Romance\n'
    "296,Pulp Fiction (1994),Comedy|Crime|Drama|Thriller\n"
    "306,Fawlty Towers (1975-1979),(no genres listed)\n"
    "307,Babylon 5,Sci-Fi\n",
  )
  data = read_movielens(tmp_path)
  np.testing.assert_array_equal(data.users, [1, 1, 3])
  np.testing.assert_array_equal(data.items, [296, 306, 1])
  np.testing.assert_array_equal(data.ratings, [5, 3.5, 4])
  np.testing.assert_array_equal(data.outcomes, [1, 0, 1])
  np.testing.assert_array_equal(data.lines, [2, 3, 4])
  assert data.item_titles[1] == "American President, The"
  assert data.item_titles[307] == "Babylon 5"
  assert data.item_years == {1: 1995, 296: 1994, 306: 1975}
  assert data.item_genres[1] == ("Comedy", "Drama", "Romance")
  assert data.item_genres[306] == ()


def test_sasrec_keeps_file_order_as_time(tmp_path):
  path = _write(tmp_path / "games.txt", "1 10\n1 7\n\n2 10\n1 10\n")
  data = read_sasrec(path)
  np.testing.assert_array_equal(data.users, [1, 1, 2, 1])
  np.testing.assert_array_equal(data.items, [10, 7, 10, 10])
  np.testing.assert_array_equal(data.timestamps, [0, 1, 2, 3])
  np.testing.assert_array_equal(data.lines, [1, 2, 4, 5])  # the blank line 3 is skipped
  assert data.outcome_names == ("engaged",)
  np.testing.assert_array_equal(data.outcomes, [0, 0, 0, 0])
  assert data.ratings is None and data.surfaces is None


def test_duplicates_and_out_of_order_times_are_kept(tmp_path):
  _write(tmp_path / "u.data", "1\t5\t4\t30\n1\t5\t4\t30\n1\t6\t2\t10\n")
  data = read_movielens(tmp_path)
  np.testing.assert_array_equal(data.items, [5, 5, 6])
  np.testing.assert_array_equal(data.timestamps, [30, 30, 10])


ACTIONS = (
  "uid,iid,when,what,where\n"
  "7,100,2024-01-02T00:00:00Z,click,home\n"
  "7,101,1704153600,save,search\n"
  "8,100,2024-01-01,click,home\n"
  "8,102,2024-01-01T01:00:00+01:00,hide,home\n"
)
COLUMNS = {"user": "uid", "item": "iid", "timestamp": "when", "outcome": "what", "surface": "where"}


def test_actions_csv_with_iso_times_outcomes_and_surfaces(tmp_path):
  data = read_actions_table(_write(tmp_path / "log.csv", ACTIONS), COLUMNS)
  np.testing.assert_array_equal(data.users, [7, 7, 8, 8])
  np.testing.assert_array_equal(data.items, [100, 101, 100, 102])
  np.testing.assert_array_equal(data.timestamps, [1704153600, 1704153600, 1704067200, 1704067200])
  assert data.outcome_names == ("click", "hide", "save")
  np.testing.assert_array_equal(data.outcomes, [0, 2, 0, 1])
  assert data.surface_names == ("home", "search")
  np.testing.assert_array_equal(data.surfaces, [0, 1, 0, 0])
  np.testing.assert_array_equal(data.lines, [2, 3, 4, 5])


def test_actions_given_outcome_names_drop_other_rows(tmp_path):
  path = _write(tmp_path / "log.csv", ACTIONS)
  data = read_actions_table(path, COLUMNS, outcome_names=("save", "click"))
  assert data.outcome_names == ("save", "click")
  np.testing.assert_array_equal(data.items, [100, 101, 100])
  np.testing.assert_array_equal(data.outcomes, [1, 0, 1])
  np.testing.assert_array_equal(data.lines, [2, 3, 4])
  assert data.surface_names == ("home", "search")


def test_actions_integer_outcomes_sort_as_numbers_and_no_outcome_is_engaged(tmp_path):
  path = _write(tmp_path / "log.tsv", "u\ti\tt\to\n1\t2\t3\t10\n1\t3\t4\t9\n")
  data = read_actions_table(path, {"user": "u", "item": "i", "timestamp": "t", "outcome": "o"})
  assert data.outcome_names == ("9", "10")
  np.testing.assert_array_equal(data.outcomes, [1, 0])
  plain = read_actions_table(path, {"user": "u", "item": "i", "timestamp": "t"})
  assert plain.outcome_names == ("engaged",) and plain.surfaces is None


def test_actions_item_ids_stay_as_the_file_spells_them(tmp_path):
  # One id that is not an integer (an ASIN), or one with a leading zero: every id is a string.
  for odd in ("B00X", "0102"):
    data = read_actions_table(
      _write(tmp_path / "log.csv", ACTIONS.replace("8,102", f"8,{odd}")), COLUMNS
    )
    assert data.items.tolist() == ["100", "101", "100", odd]
  data = read_actions_table(_write(tmp_path / "log.csv", ACTIONS), COLUMNS)
  assert data.items.dtype == np.int64


def test_actions_parquet(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  path = tmp_path / "log.parquet"
  table = pa.table(
    {"u": [3, 3, 4], "i": [1, 2, 1], "t": ["2024-01-01", "10", "20"], "s": [2, 5, 2]}
  )
  pq.write_table(table, path)
  data = read_actions_table(path, {"user": "u", "item": "i", "timestamp": "t", "surface": "s"})
  np.testing.assert_array_equal(data.users, [3, 3, 4])
  np.testing.assert_array_equal(data.timestamps, [1704067200, 10, 20])
  assert data.surface_names == ("2", "5")
  np.testing.assert_array_equal(data.surfaces, [0, 1, 0])
  np.testing.assert_array_equal(data.lines, [1, 2, 3])  # Parquet rows, numbered from 1
  with pytest.raises(DataFormatError) as error:
    read_actions_table(path, {"user": "u", "item": "i", "timestamp": "when"})
  _check_error(error.value, path, None, "when")


def test_parquet_without_pyarrow_names_the_package(tmp_path, monkeypatch):
  path = _write(tmp_path / "log.parquet", "not parquet")
  monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import now raises ImportError
  with pytest.raises(ImportError, match="pyarrow"):
    read_actions_table(path, {"user": "u", "item": "i", "timestamp": "t"})


def test_read_interactions_dispatch(tmp_path):
  _write(tmp_path / "u.data", U_DATA)
  sasrec = _write(tmp_path / "games.txt", "1 2\n2 3\n")
  actions = _write(tmp_path / "log.csv", ACTIONS)
  assert read_interactions(tmp_path).outcome_names == ("low", "high")
  assert read_interactions(tmp_path / "u.data", "movielens").ratings is not None
  assert read_interactions(sasrec).outcome_names == ("engaged",)
  assert len(read_interactions(actions, columns=COLUMNS)) == 4
  assert len(read_interactions(actions, "actions", columns=COLUMNS)) == 4
  with pytest.raises(ValueError, match="cannot tell the format"):
    read_interactions(actions)
  with pytest.raises(ValueError, match="cannot tell the format"):
    read_interactions(_write(tmp_path / "notes.txt", "hello world\n"))
  with pytest.raises(ValueError, match="expected one of"):
    read_interactions(tmp_path, "netflix")


# Bad input: each case names the file, the line and the field.


def _actions(columns):
  return lambda path: read_actions_table(path, columns)


_LOG_COLUMNS = {"user": "uid", "item": "iid", "timestamp": "when"}

# (case, file name, text, reader, message pattern, line, field): each names the file, line, field.
_BAD_INPUT = [
  (
    "malformed: extra field",
    "u.data",
    "1\t2\t3\t4\n1\t2\t3\t4\t5\n",
    read_movielens,
    "expected 4 fields",
    2,
    "#5",
  ),
  (
    "malformed: missing field",
    "games.txt",
    "1 2\n3\n4 5\n",
    read_sasrec,
    "expected 2 fields",
    2,
    "item",
  ),
  (
    "malformed: short row",
    "log.csv",
    "uid,iid,when\n1,2\n",
    _actions(_LOG_COLUMNS),
    "expected 3 fields",
    2,
    "when",
  ),
  (
    "truncated csv",
    "ratings.csv",
    "userId,movieId,rating,timestamp\n1,2,4,5\n1,3",
    read_movielens,
    "truncated",
    3,
    "rating",
  ),
  (
    "truncated dat",
    "ratings.dat",
    "1::2::4::5\n1::3::4::",
    read_movielens,
    "truncated",
    2,
    "timestamp",
  ),
  ("truncated sasrec", "games.txt", "1 2\n1 3\n1", read_sasrec, "truncated", 3, "item"),
  (
    "missing column csv",
    "ratings.csv",
    "userId,movieId,rating\n1,2,4\n",
    read_movielens,
    "lacks column",
    1,
    "timestamp",
  ),
  (
    "missing column inter",
    "x.inter",
    "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n",
    read_movielens,
    "lacks column",
    1,
    "rating",
  ),
  (
    "missing column table",
    "log.csv",
    "uid,iid,time\n1,2,3\n",
    _actions(_LOG_COLUMNS),
    "lacks column",
    1,
    "when",
  ),
  (
    "non-numeric item",
    "u.data",
    "1\t2\t3\t4\n1\tx2\t3\t4\n",
    read_movielens,
    "must be an integer, got 'x2'",
    2,
    "item",
  ),
  ("non-numeric user", "games.txt", "1 2\nA1 3\n", read_sasrec, "positive integer", 2, "user"),
  ("zero id", "zero.txt", "1 2\n1 0\n", read_sasrec, "positive integer, got 0", 2, "item"),
  (
    "non-numeric table user",
    "log.csv",
    ACTIONS.replace("8,102", "B8,102", 1),
    _actions(COLUMNS),
    "B8",
    5,
    "uid",
  ),
  (
    "empty table item",
    "log.csv",
    ACTIONS.replace("8,102", "8,", 1),
    _actions(COLUMNS),
    "must not be empty",
    5,
    "iid",
  ),
  (
    "non-numeric timestamp",
    "ratings.dat",
    "1::2::4::5\n1::3::4::5\n1::4::4::soon\n",
    read_movielens,
    "integer seconds, got 'soon'",
    3,
    "timestamp",
  ),
  (
    "non-ISO timestamp",
    "log.csv",
    ACTIONS.replace("1704153600", "yesterday"),
    _actions(COLUMNS),
    "ISO-8601",
    3,
    "when",
  ),
  (
    "non-numeric rating",
    "u.data",
    "1\t2\tfive\t4\n",
    read_movielens,
    "rating must be a number",
    1,
    "rating",
  ),
]


@pytest.mark.parametrize(
  ("name", "text", "read", "pattern", "line", "field"),
  [case[1:] for case in _BAD_INPUT],
  ids=[case[0] for case in _BAD_INPUT],
)
def test_bad_input_names_file_line_and_field(tmp_path, name, text, read, pattern, line, field):
  path = _write(tmp_path / name, text)
  with pytest.raises(DataFormatError, match=pattern) as error:
    read(path)
  _check_error(error.value, path, line, field)


def test_quoted_title_cut_off_at_the_end(tmp_path):
  _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4,5\n")
  movies = _write(tmp_path / "movies.csv", 'movieId,title,genres\n2,"American President, The (1')
  with pytest.raises(DataFormatError, match="truncated") as error:
    read_movielens(tmp_path)
  _check_error(error.value, movies, 2, "genres")


@pytest.mark.parametrize(
  ("name", "text", "read"),
  [
    ("u.data", "", read_movielens),
    ("u.data", "\n \n", read_movielens),
    ("ratings.csv", "userId,movieId,rating,timestamp\n", read_movielens),
    ("games.txt", "", read_sasrec),
    ("log.csv", "uid,iid,when,what,where\n", lambda path: read_actions_table(path, COLUMNS)),
  ],
)
def test_empty_file(tmp_path, name, text, read):
  path = _write(tmp_path / name, text)
  with pytest.raises(DataFormatError, match="empty") as error:
    read(path)
  _check_error(error.value, path, None, None)


def test_user_with_no_valid_action(tmp_path):
  path = _write(tmp_path / "log.csv", ACTIONS)
  with pytest.raises(DataFormatError, match="user 8 has no valid action") as error:
    read_actions_table(path, COLUMNS, outcome_names=("save",))
  _check_error(error.value, path, 4, "user")  # user 8's first line


def test_missing_file_or_folder_lists_the_layouts(tmp_path):
  missing = tmp_path / "ml-1m"
  for read in (read_movielens, read_interactions):
    with pytest.raises(FileNotFoundError, match="ratings.dat") as error:
      read(missing)
    assert str(missing) in str(error.value) and "u.data" in str(error.value)
  with pytest.raises(FileNotFoundError, match="ratings.csv") as error:
    read_movielens(tmp_path)  # a folder without a ratings file
  assert str(tmp_path) in str(error.value)
  with pytest.raises(FileNotFoundError, match="SASRec") as error:
    read_sasrec(tmp_path / "games.txt")
  assert str(tmp_path / "games.txt") in str(error.value)
  with pytest.raises(FileNotFoundError, match="parquet"):
    read_actions_table(tmp_path / "log.csv", COLUMNS)


# The public data sets (PROTOCOL.md, SPLITS.md).


def test_shared_ml100k(shared_data_dir):
  data = read_interactions(shared_data_dir / "ml-100k")
  assert data.path.endswith("ml-100k.inter")
  assert len(data) == 100_000
  assert len(np.unique(data.users)) == 943
  assert len(np.unique(data.items)) == 1682
  assert len(data.item_titles) == 1682
  assert set(data.item_titles) == set(np.unique(data.items).tolist())


def test_shared_amazon_games(shared_data_dir):
  data = read_interactions(shared_data_dir / "amazon-games" / "games.txt")
  assert len(data) == 287_107
  assert len(np.unique(data.users)) == 31_013
  assert len(np.unique(data.items)) == 23_715
  np.testing.assert_array_equal(data.timestamps, np.arange(287_107))
