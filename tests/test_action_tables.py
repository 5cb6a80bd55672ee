"""Actions tables through pyarrow give what the line-by-line parser gives, or stand aside."""

import csv
import pathlib
import sys

import numpy as np
import pyarrow as pa
import pytest
from same_fields import assert_same_fields
from test_readers import ACTIONS, COLUMNS

from unipinrec.data import action_tables, columnar, text_values
from unipinrec.data.action_tables import read_actions_table
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.tables import parse_any_seconds

PLAIN = {"user": "u", "item": "i", "timestamp": "t"}

# (file name, text, columns, outcome_names): the layouts of test_readers.py's actions tests.
LAYOUTS = [
  ("log.csv", ACTIONS, COLUMNS, None),
  ("log.csv", ACTIONS, COLUMNS, ("save", "click")),
  ("log.csv", ACTIONS.replace("8,102", "8,B00X"), COLUMNS, None),
  ("log.csv", ACTIONS.replace("8,102", "8,0102"), COLUMNS, None),
  ("log.tsv", "u\ti\tt\to\n1\t2\t3\t10\n1\t3\t4\t9\n", {**PLAIN, "outcome": "o"}, None),
  ("log.tsv", "u\ti\tt\to\n1\t2\t3\t10\n1\t3\t4\t9\n", PLAIN, None),
  ("log.csv", "u,i,t,s\n3,1,2024-01-01,2\n3,2,10,5\n4,1,20,2\n", {**PLAIN, "surface": "s"}, None),
]


def _read(path, columns, outcome_names, monkeypatch, fast: bool):
  """The table as read with the pyarrow path, or with it switched off; an error as its text."""
  with monkeypatch.context() as patch:
    if not fast:
      patch.setattr(action_tables, "read_text", lambda *args: None)
    try:
      return read_actions_table(path, columns, outcome_names)
    except DataFormatError as error:
      return str(error)


def _assert_same(fast, slow):
  if isinstance(slow, str) or isinstance(fast, str):
    assert fast == slow
    return
  assert_same_fields(fast, slow)


def _fast_path_reads(path, columns) -> bool:
  delimiter = "\t" if path.suffix == ".tsv" else ","
  return action_tables._columnar_actions(path, delimiter, columns) is not None


@pytest.mark.parametrize(("name", "text", "columns", "outcome_names"), LAYOUTS)
def test_fast_path_gives_the_slow_paths_interactions(
  tmp_path, monkeypatch, name, text, columns, outcome_names
):
  path = tmp_path / name
  path.write_text(text)
  assert _fast_path_reads(path, columns)
  fast = _read(path, columns, outcome_names, monkeypatch, fast=True)
  assert not isinstance(fast, str)
  _assert_same(fast, _read(path, columns, outcome_names, monkeypatch, fast=False))


def test_a_user_without_valid_action_is_the_same_error(tmp_path, monkeypatch):
  path = tmp_path / "log.csv"
  path.write_text(ACTIONS)
  assert _fast_path_reads(path, COLUMNS)
  fast = _read(path, COLUMNS, ("save",), monkeypatch, fast=True)
  why = "user 8 has no valid action: no row's outcome is one of ('save',)"
  assert fast == f"{path}:4: field 'user': {why}"
  assert fast == _read(path, COLUMNS, ("save",), monkeypatch, fast=False)


SAME = {"user": "u", "item": "u", "timestamp": "u"}


@pytest.mark.parametrize(
  ("text", "columns"),
  [
    (ACTIONS.replace("\n", "\r\n"), COLUMNS),  # CRLF
    (ACTIONS[:-1], COLUMNS),  # no final newline
    (ACTIONS.replace("home\n8", "home\n\n8"), COLUMNS),  # a blank line
    ("\ufeff" + ACTIONS, COLUMNS),  # a byte-order mark
    (ACTIONS.replace("click,home", '"click",home', 1), COLUMNS),  # a quote
    (ACTIONS.replace("home", "h\x00me", 1), COLUMNS),  # NUL
    ("u\n1\n \n2\n", SAME),  # one column: a blank field is a blank line to csv
    ("u,i,u\n1,2,3\n", SAME),  # a name twice
  ],
)
def test_unusual_files_go_the_slow_way(tmp_path, monkeypatch, text, columns):
  path = tmp_path / "log.csv"
  path.write_bytes(text.encode())
  assert columnar.read_text(path, ",", list(dict.fromkeys(columns.values()))) is None
  _assert_same(
    _read(path, columns, None, monkeypatch, fast=True),
    _read(path, columns, None, monkeypatch, fast=False),
  )


def test_latin1_and_overlong_lines_go_the_slow_way(tmp_path, monkeypatch):
  path = tmp_path / "log.csv"
  path.write_bytes(ACTIONS.replace("search", "s\xe9arch").encode("latin-1"))
  assert columnar.read_text(path, ",", ["uid", "what"]) is None
  _assert_same(
    _read(path, COLUMNS, None, monkeypatch, fast=True),
    _read(path, COLUMNS, None, monkeypatch, fast=False),
  )
  path.write_text(ACTIONS)
  # csv refuses a field over its limit (the longest here has 25 characters): the slow path's error
  limit = csv.field_size_limit(50)
  try:
    assert columnar.read_text(path, ",", ["uid"]) is not None
    csv.field_size_limit(24)
    assert columnar.read_text(path, ",", ["uid"]) is None
    fast = _read(path, COLUMNS, None, monkeypatch, fast=True)
    assert "unreadable CSV" in fast
  finally:
    csv.field_size_limit(limit)


def test_python_space_is_what_str_strip_strips():
  spaces = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
  assert set(text_values.PYTHON_SPACE) == spaces
  found = text_values.categories(pa.chunked_array([["\u3000a\x1c", " b", "a"], ["b\t"]]))
  assert found.values == ["a", "b"] and found.codes.tolist() == [0, 1, 0, 1]
  assert text_values.categories(pa.chunked_array([["a", " "]])) is None


# Spellings that `int`, `float` and `fromisoformat` may read, or not, or read differently.
# Each list starts with the spellings the fast path reads (the first `covered` of them).
USERS = ["7", "42", "007", "-0", "-2", "+3", " 5", "1_0", "٣", "9223372036854775807", "x", ""]
ITEMS = ["7", "42", "0", "007", "-05", "B00X", " B00X ", "\u3000e\x1c", "٣", "1_0", "+3"]
ITEMS += ["12345678901234567890", "9223372036854775807", ""]
COVERED_TIMES = [
  "1704153600",
  "-86400",
  "20240102",
  "1704153600.75",
  "-0.5",
  "2024-01-01",
  "2024-02-29",
  "0001-01-01T00:00:00+01:00",
  "9999-12-31T23:59:59-01:00",
  "2024-01-02T00:00:00Z",
  "2024-01-02 10:30",
  "2024-01-02T10:30Z",
  "2024-01-02T10:30:05.5",
  "2024-01-02T10:30:05.123456+05:30",
  "1969-12-31T23:59:59.5-00:30",
]
TIMES = COVERED_TIMES + [
  "5.",
  "1e3",
  "2023-02-29",
  "2024-13-01",
  "0000-01-01",
  "1969-12-31T23:59:59.999999",
  "2024-01-02T10:30:05.1234567",
  "2024-01-02T24:00:00",
  "2024-01-02T10:60:00",
  "2024-01-02T10:30:00+01:60",
  "2024-01-02T10:30:00+0100",
  "2024-01-02t10:30:00z",
  "2024-W01-1",
  " 2024-01-02",
  "soon",
]
CATEGORIES = ["click", "save", " click", "10", "9", "09", "٣", "h\u00e9", "\x1cview\u3000", ""]


def test_any_seconds_is_parse_any_seconds_where_it_reads():
  for spelling in TIMES:
    got = text_values.any_seconds(pa.chunked_array([[spelling]]))
    assert (got is not None) == (spelling in COVERED_TIMES), spelling
    if got is not None:
      assert got.tolist() == [parse_any_seconds(spelling)], spelling
  got = text_values.any_seconds(pa.chunked_array([COVERED_TIMES[:5], COVERED_TIMES[5:]]))
  assert got.tolist() == [parse_any_seconds(spelling) for spelling in COVERED_TIMES]


def test_random_spellings_read_alike(tmp_path, monkeypatch):
  """Fields drawn from the spellings above: the same Interactions, or the same located error."""
  pools = [(USERS, 5), (ITEMS, 11), (TIMES, len(COVERED_TIMES)), (CATEGORIES, 9), (CATEGORIES, 9)]
  rng = np.random.default_rng(0)
  fast_reads = 0
  for case in range(360):
    odd = case % 6  # this column draws from every spelling, the others from the covered ones
    drawn = [
      pool if column == odd else pool[:covered] for column, (pool, covered) in enumerate(pools)
    ]
    rows = [",".join(rng.choice(pool) for pool in drawn) for _ in range(3)]
    path = tmp_path / f"case{case}" / ("log.tsv" if case % 4 == 0 else "log.csv")
    path.parent.mkdir()
    separator = "\t" if path.suffix == ".tsv" else ","
    text = "uid,iid,when,what,where\n" + "\n".join(rows) + "\n"
    path.write_text(text.replace(",", separator))
    outcome_names = ("click", "9") if case % 5 == 1 else None
    fast_reads += _fast_path_reads(path, COLUMNS)
    _assert_same(
      _read(path, COLUMNS, outcome_names, monkeypatch, fast=True),
      _read(path, COLUMNS, outcome_names, monkeypatch, fast=False),
    )
  assert fast_reads >= 150  # the draw exercises the fast path, not only the fallback
  assert fast_reads >= 100  # the draw exercises the fast path, not only the fallback


def test_large_file_reads_alike(tmp_path, monkeypatch):
  """Many rows, so pyarrow reads them in several chunks: the same arrays as line by line."""
  rng = np.random.default_rng(1)
  rows = 60_000
  path: pathlib.Path = tmp_path / "log.csv"
  users = rng.integers(1, 500, rows)
  items = np.where(rng.random(rows) < 0.5, rng.integers(1, 900, rows).astype(str), "B0X")
  times = rng.integers(0, 2_000_000_000, rows).astype(str)
  kinds = rng.choice(["click", "view", "save"], rows)
  lines = (f"{u},{i},{t},{k},home" for u, i, t, k in zip(users, items, times, kinds, strict=True))
  path.write_text("uid,iid,when,what,where\n" + "\n".join(lines) + "\n")
  table = columnar.read_text(path, ",", ["uid"])
  assert table is not None and table.columns["uid"].num_chunks > 1
  _assert_same(
    _read(path, COLUMNS, None, monkeypatch, fast=True),
    _read(path, COLUMNS, None, monkeypatch, fast=False),
  )
