"""The pyarrow fast path gives exactly what the line-by-line readers give, or stands aside."""

import pathlib

import numpy as np
import pytest
from same_fields import assert_same_fields

from unipinrec.data import columnar, movielens, sasrec
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.readers import read_interactions

# (file name, text) per layout, each a usual file the fast path reads.
LAYOUTS = [
  ("u.data", "196\t242\t3\t881250949\n186\t302\t4\t891717742\n196\t377\t5\t878887116\n"),
  (
    "x.inter",
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t4.5\t891717742.0\n",
  ),
  ("ratings.dat", "1::1193::5::978300760\n1::661::3.5::978302109\n2::1193::4::9\n"),
  (
    "ratings.csv",
    "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n3,1,4.0,5\n",
  ),
  ("games.txt", "1 10\n1 7\n2 10\n1 10\n"),
]


def _slow(monkeypatch, path: pathlib.Path):
  """What the readers give with the fast path switched off."""
  with monkeypatch.context() as patch:
    for module in (movielens, sasrec):
      patch.setattr(module, "read_numeric", lambda *args, **kwargs: None)
    return read_interactions(path)


@pytest.mark.parametrize(("name", "text"), LAYOUTS, ids=[name for name, _ in LAYOUTS])
def test_fast_path_gives_the_slow_paths_arrays(tmp_path, monkeypatch, name, text):
  path = tmp_path / name
  path.write_text(text)
  taken = []
  real = columnar.read_numeric
  for module in (movielens, sasrec):
    monkeypatch.setattr(
      module, "read_numeric", lambda *a, **k: taken.append(real(*a, **k)) or taken[-1]
    )
  fast = read_interactions(path)
  monkeypatch.undo()
  assert taken and taken[0] is not None  # the fast path read it
  assert_same_fields(fast, _slow(monkeypatch, path))


@pytest.mark.parametrize(
  "text",
  [
    "1\t2\t3\t4\r\n5\t6\t7\t8\r\n",  # CRLF
    "1\t2\t3\t4\n5\t6\t7\t8",  # no final newline
    "1\t2\t3\t4\n\n5\t6\t7\t8\n",  # a blank line
    "\ufeff1\t2\t3\t4\n",  # a byte-order mark
    "1\t0x2\t3\t4\n",  # hex, which pyarrow would read as 2
    "1\t2\t3\t4 \n",  # trailing whitespace
    "1\t\t2\t3\t4\n",  # a run of separators, which str.split() merges
    "1 2\t3\t4\n",  # mixed whitespace
    "+1\t2\t3\t4\n",  # a sign pyarrow's integers refuse
  ],
)
def test_unusual_files_go_the_slow_way(tmp_path, monkeypatch, text):
  path = tmp_path / "u.data"
  path.write_bytes(text.encode())
  kinds = dict.fromkeys(("user", "item", "rating", "timestamp"), columnar.INT)
  assert columnar.read_numeric(path, None, tuple(kinds), kinds) is None
  try:
    fast = read_interactions(path)
  except DataFormatError as error:
    with pytest.raises(DataFormatError) as slow_error:
      _slow(monkeypatch, path)
    assert str(error) == str(slow_error.value)
  else:
    assert_same_fields(fast, _slow(monkeypatch, path))


# Spellings pyarrow and Python might read differently: signs, exponents, points, zeros, limits.
INTEGERS = ["7", "007", "-0", "-2", "+3", "9223372036854775807", "9223372036854775808"]
NUMBERS = INTEGERS + [
  "3.5",
  "4.0",
  ".5",
  "5.",
  "1e3",
  "1E2",
  "1.5e-3",
  "1e",
  "--1",
  ".",
  "e5",
  "-",
  "9007199254740993.0",
  "1e400",
]


def test_random_spellings_read_alike(tmp_path, monkeypatch):
  """Fields drawn from `INTEGERS` and `NUMBERS`: the same arrays, or the same located error."""
  rng = np.random.default_rng(0)
  fast_reads = 0
  for case in range(400):
    pools = (INTEGERS, INTEGERS, NUMBERS, NUMBERS)
    rows = [",".join(rng.choice(pool) for pool in pools) for _ in range(2)]
    path = tmp_path / f"case{case}" / "ratings.csv"
    path.parent.mkdir()
    path.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    kinds = {"userId": "int", "movieId": "int", "rating": "float", "timestamp": "seconds"}
    fast_reads += columnar.read_numeric(path, ",", None, kinds) is not None
    try:
      fast = read_interactions(path)
    except DataFormatError as error:
      with pytest.raises(DataFormatError) as slow_error:
        _slow(monkeypatch, path)
      assert str(error) == str(slow_error.value), rows
    else:
      assert_same_fields(fast, _slow(monkeypatch, path))
  assert fast_reads >= 10  # the draw exercises the fast path, not only the fallback
