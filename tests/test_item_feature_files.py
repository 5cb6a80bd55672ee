"""Item feature files: each layout against hand-written arrays, alignment, cold ids, errors."""

import pathlib

import numpy as np
import pytest

from unipinrec.data.content_vectors import read_content_vectors
from unipinrec.data.dataset import DataConfig, prepare_data
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.item_feature_files import item_features_from, read_item_features
from unipinrec.data.movielens import movielens_side_table, year_bucket
from unipinrec.data.readers import read_interactions
from unipinrec.data.vocabulary import ItemVocabulary

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# Logged items 10, 20, 30 are internal ids 1, 2, 3; the files add 40, a feature-only item.
LOGGED = ItemVocabulary([10, 20, 30])
# Rows in file order: 20, 10, 40 (30 has none).
CONTENT_ROWS = [(20, [1.0, 2.0]), (10, [3.0, 4.0]), (40, [5.0, -6.5])]
# Internal rows 0 (padding), 10, 20, 30 (no row: zeros), 40 (appended).
EXPECTED_CONTENT = np.array([[0, 0], [3, 4], [1, 2], [0, 0], [5, -6.5]], np.float32)


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  return path


def _check_error(error: DataFormatError, path: pathlib.Path, line: int | None, field: str):
  """The message and the attributes name the file, the line and the field."""
  message = str(error)
  assert str(path) in message and error.path == str(path)
  assert error.line == line and (line is None or f"{path}:{line}:" in message)
  assert error.field == field and repr(field) in message


def _check_content(vocabulary, features, cold):
  np.testing.assert_array_equal(vocabulary.to_original(np.arange(1, 5)), [10, 20, 30, 40])
  np.testing.assert_array_equal(features.content, EXPECTED_CONTENT)
  np.testing.assert_array_equal(features.has_features, [False, True, True, False, True])
  np.testing.assert_array_equal(cold, [False, False, False, False, True])
  assert features.numeric.shape == (5, 0) and features.categorical == ()


def test_npy_content(tmp_path):
  path = tmp_path / "content.npy"
  np.save(path, np.array([[i, *v] for i, v in CONTENT_ROWS], np.float64))
  _check_content(*read_item_features(LOGGED, content_path=path))


def test_parquet_content(tmp_path):
  path = tmp_path / "content.parquet"
  ids, vectors = zip(*CONTENT_ROWS, strict=True)
  pq.write_table(pa.table({"item": list(ids), "vector": list(vectors)}), path)
  _check_content(*read_item_features(LOGGED, content_path=path))


@pytest.mark.parametrize("header", ["", "item,a,b\n"])
def test_csv_content_with_or_without_header(tmp_path, header):
  path = _write(tmp_path / "content.csv", header + "20,1,2\n\n10,3.0,4e0\n40,5,-6.5\n")
  _check_content(*read_item_features(LOGGED, content_path=path))


def test_string_ids_and_feature_only_ids_appended_in_ascending_order(tmp_path):
  logged = ItemVocabulary(["m", "c"])  # m is 1, c is 2
  path = _write(tmp_path / "content.csv", "z,1\nc,2\nb,3\n")
  vocabulary, features, cold = read_item_features(logged, content_path=path)
  np.testing.assert_array_equal(vocabulary.to_original(np.arange(1, 5)), ["m", "c", "b", "z"])
  np.testing.assert_array_equal(features.content[:, 0], [0, 0, 2, 3, 1])
  np.testing.assert_array_equal(features.has_features, [False, False, True, True, True])
  np.testing.assert_array_equal(cold, [False, False, False, True, True])


SIDE_CSV = (
  "item,genres,year_bucket,price,ignored\n"
  "30,Comedy|Drama,1990s,10,x\n"
  "10,Drama,,20,x\n"
  "50,,1980s,,x\n"
  "20,Action|Drama|Action|,1990s,30,x\n"
)


def test_side_csv(tmp_path):
  path = _write(tmp_path / "side.csv", SIDE_CSV)
  vocabulary, features, cold = read_item_features(
    LOGGED,
    side_path=path,
    categorical=("year_bucket",),
    multi_valued=("genres",),
    numeric=("price",),
  )
  # Internal ids: 10, 20, 30, then the feature-only 50.
  np.testing.assert_array_equal(vocabulary.to_original(np.arange(1, 5)), [10, 20, 30, 50])
  np.testing.assert_array_equal(cold, [False, False, False, False, True])
  np.testing.assert_array_equal(features.has_features, [False, True, True, True, True])
  year, genres = features.categorical
  assert (year.name, year.vocabulary) == ("year_bucket", ("1980s", "1990s"))
  np.testing.assert_array_equal(year.values[:, 0], [0, 0, 2, 2, 1])
  assert (genres.name, genres.vocabulary) == ("genres", ("Action", "Comedy", "Drama"))
  # Value ids ascending, repeats once, 0-padded to the most values an item has (2).
  np.testing.assert_array_equal(genres.values, [[0, 0], [3, 0], [1, 3], [2, 3], [0, 0]])
  # Prices 20, 30, 10 over the items with one: mean 20, population std sqrt(200 / 3).
  scale = np.sqrt(200 / 3)
  np.testing.assert_allclose(features.numeric[:, 0], [0, 0, 10 / scale, -10 / scale, 0], atol=1e-6)
  assert features.content.shape == (5, 0)


def test_side_parquet_lists_and_content_together(tmp_path):
  side = tmp_path / "side.parquet"
  table = {"id": [20, 10], "tags": [["b", "a"], None], "size": [1.0, 1.0], "kind": ["x", None]}
  pq.write_table(pa.table(table), side)
  content = _write(tmp_path / "content.csv", "10,0.5\n")
  vocabulary, features, cold = read_item_features(
    LOGGED, content, side, categorical=("kind",), multi_valued=("tags",), numeric=("size",)
  )
  assert vocabulary == LOGGED and not cold.any()
  kind, tags = features.categorical
  np.testing.assert_array_equal(kind.values[:, 0], [0, 0, 1, 0])
  np.testing.assert_array_equal(tags.values, [[0, 0], [0, 0], [1, 2], [0, 0]])
  # A constant column carries nothing: 0, not NaN.
  np.testing.assert_array_equal(features.numeric[:, 0], [0, 0, 0, 0])
  np.testing.assert_array_equal(features.content[:, 0], [0, 0.5, 0, 0])
  np.testing.assert_array_equal(features.has_features, [False, True, True, False])


@pytest.mark.parametrize(
  "text, line, field, message",
  [
    ("item,a,b\n10,1,2\n20,1\n", 3, "b", "'b' is missing"),
    ("10,1,2\n20,1,2,3\n", 2, "#4", "extra"),
    ("10,1,2\n20,1,abc\n", 2, "#3", "finite number, got 'abc'"),
    ("10,1,2\n20,nan,2\n", 2, "#2", "finite number, got 'nan'"),
    ("10,1,2\n20,1,inf\n", 2, "#3", "finite number, got 'inf'"),
    ("item,a\n10,1\n20,1\n10,2\n", 4, "item", "repeats the row on line 2"),
    ("10,1\nx,1\n", 2, "#1", "must be an integer"),
  ],
)
def test_content_csv_errors(tmp_path, text, line, field, message):
  path = _write(tmp_path / "content.csv", text)
  with pytest.raises(DataFormatError, match=message) as error:
    read_content_vectors(path, integer_ids=True)
  _check_error(error.value, path, line, field)


def test_content_npy_and_parquet_errors(tmp_path):
  path = tmp_path / "content.npy"
  np.save(path, np.array([[10, 1, 2], [20, 1, np.nan]]))
  with pytest.raises(DataFormatError, match="finite number, got nan") as error:
    read_content_vectors(path, integer_ids=True)
  _check_error(error.value, path, 2, "#3")
  path = tmp_path / "content.parquet"
  pq.write_table(pa.table({"item": [10, 20], "vector": [[1.0, 2.0], [1.0]]}), path)
  with pytest.raises(DataFormatError, match="expected a vector of 2 numbers, got 1") as error:
    read_content_vectors(path, integer_ids=True)
  _check_error(error.value, path, 2, "vector")


@pytest.mark.parametrize(
  "text, kinds, line, field, message",
  [
    ("item,price\n10,1\n", {"numeric": ("cost",)}, 1, "cost", "lacks column 'cost'"),
    ("item,price\n10,1\n20,cheap\n", {"numeric": ("price",)}, 3, "price", "got 'cheap'"),
    ("item,price\n10,1\n20,NaN\n", {"numeric": ("price",)}, 3, "price", "got 'NaN'"),
    ("item,kind\n10,a\n10,b\n", {"categorical": ("kind",)}, 3, "item", "repeats"),
  ],
)
def test_side_errors(tmp_path, text, kinds, line, field, message):
  path = _write(tmp_path / "side.csv", text)
  with pytest.raises(DataFormatError, match=message) as error:
    read_item_features(LOGGED, side_path=path, **kinds)
  _check_error(error.value, path, line, field)


def test_side_parquet_list_in_a_single_valued_column(tmp_path):
  path = tmp_path / "side.parquet"
  pq.write_table(pa.table({"item": [10, 20], "kind": [["a"], ["a", "b"]]}), path)
  with pytest.raises(DataFormatError, match="expected one value") as error:
    read_item_features(LOGGED, side_path=path, categorical=("kind",))
  _check_error(error.value, path, 1, "kind")


def test_year_bucket():
  assert [year_bucket(y) for y in (1937, 1995, 1999, 2000)] == [
    "1935-1939",
    "1995-1999",
    "1995-1999",
    "2000-2004",
  ]


def _movielens_features(path):
  vocabulary = ItemVocabulary.from_items(read_interactions(path).items)
  return item_features_from(
    vocabulary, side=movielens_side_table(path), categorical=("year",), multi_valued=("genres",)
  )


def _genres(feature, vocabulary, item):
  values = feature.values[vocabulary.to_internal(np.array([item]))[0]]
  return {feature.vocabulary[v - 1] for v in values if v}


def test_movielens_u_item_side_features(tmp_path):
  (tmp_path / "u.data").write_text("1\t242\t3\t881250949\n1\t267\t4\t891717742\n")
  flags = ["0"] * 19
  kolya = flags.copy()
  kolya[5] = "1"  # Comedy in u.genre's order
  unknown = flags.copy()
  unknown[0] = "1"
  (tmp_path / "u.item").write_bytes(
    (
      f"242|Kolya (1996)|24-Jan-1997||http://x|{'|'.join(kolya)}\n"
      f"267|unknown||||{'|'.join(unknown)}\n"
      f"300|Misérables, Les (1995)|01-Jan-1995||http://x|{'|'.join(kolya)}\n"
    ).encode("latin-1")
  )
  vocabulary, features, cold = _movielens_features(tmp_path)
  year, genres = features.categorical
  # 300 is in u.item but never rated: a feature-only film.
  np.testing.assert_array_equal(vocabulary.to_original(np.arange(1, 4)), [242, 267, 300])
  np.testing.assert_array_equal(cold, [False, False, False, True])
  assert year.vocabulary == ("1995-1999",) and genres.vocabulary == ("Comedy", "unknown")
  np.testing.assert_array_equal(year.values[:, 0], [0, 1, 0, 1])  # 267 has no year
  np.testing.assert_array_equal(genres.values[:, 0], [0, 1, 2, 1])
  np.testing.assert_array_equal(features.has_features, [False, True, True, True])


def test_ml100k_side_features(shared_data_dir):
  path = shared_data_dir / "ml-100k"
  vocabulary, features, cold = _movielens_features(path)
  year, genres = features.categorical
  assert len(vocabulary) == 1682 and not cold.any() and features.has_features[1:].all()
  assert len(genres.vocabulary) == 19 and genres.width == 6
  assert _genres(genres, vocabulary, 1) == {"Animation", "Children's", "Comedy"}  # Toy Story
  assert _genres(genres, vocabulary, 2) == {"Action", "Adventure", "Thriller"}  # GoldenEye
  assert _genres(year, vocabulary, 1) == {"1995-1999"}
  assert _genres(year, vocabulary, 99) == {"1935-1939"}  # Snow White (1937)
  assert _genres(year, vocabulary, 267) == set()  # "unknown": no year
  assert _genres(genres, vocabulary, 267) == {"unknown"}


def _sasrec_log(tmp_path):
  path = tmp_path / "log.txt"
  sequences = [[1, 2, 3, 4, 5], [6, 7, 8, 2, 3]]
  path.write_text("".join(f"{u} {i}\n" for u, items in enumerate(sequences, 1) for i in items))
  return path


def test_prepared_data_append_feature_only_items_outside_training(tmp_path):
  content = _write(tmp_path / "content.csv", "9,1,1\n2,2,0\n3,0,2\n")
  side = _write(tmp_path / "side.csv", "item,kind\n1,a\n9,b\n")
  config = DataConfig(
    source="sasrec",
    path=str(_sasrec_log(tmp_path)),
    tfds_dir=str(tmp_path / "tfds"),
    item_content_path=str(content),
    item_side_path=str(side),
    item_categorical=("kind",),
  )
  data = prepare_data(config, max_length=4, seed=0)
  # Items 1..8 as logged, then 9 from the feature files.
  np.testing.assert_array_equal(
    data.item_vocabulary.to_original(np.arange(1, 10)), np.arange(1, 10)
  )
  assert data.logs.num_items == 9 and data.item_log_frequency.shape == (10,)
  np.testing.assert_array_equal(data.cold_items, [False] * 9 + [True])
  features = data.item_features
  np.testing.assert_array_equal(features.content[[1, 2, 3, 9]], [[0, 0], [2, 0], [0, 2], [1, 1]])
  np.testing.assert_array_equal(features.categorical[0].values[:, 0], [0, 1] + [0] * 7 + [2])
  np.testing.assert_array_equal(features.has_features, [0, 1, 1, 1] + [0] * 5 + [1])
  # The feature-only item is in no training action, slate, example or evaluation draw.
  seen = [data.logs.action_items, data.logs.slate_items, data.eval_negatives]
  seen += [data.train_examples["items"], data.eval_examples.retrieval_targets]
  assert max(int(np.max(a)) for a in seen) <= 8


def test_prepared_data_movielens_side_features(tmp_path):
  folder = tmp_path / "ml"
  folder.mkdir()
  rated = {1: (10, 20, 30, 40), 2: (10, 20, 30, 50)}
  (folder / "u.data").write_text(
    "".join(f"{u}\t{i}\t4\t{t}\n" for u, items in rated.items() for t, i in enumerate(items))
  )
  comedy = "|".join("1" if g == 5 else "0" for g in range(19))  # u.genre's Comedy
  years = {10: 1972, 20: 1983, 30: 1991, 40: 1999, 60: 1996}  # 50: no row; 60: never rated
  (folder / "u.item").write_text(
    "".join(f"{i}|Film {i} ({y})|01-Jan-{y}||x|{comedy}\n" for i, y in years.items())
  )
  config = DataConfig(
    source="movielens",
    path=str(folder),
    tfds_dir=str(tmp_path / "tfds"),
    movielens_side_features=True,
  )
  data = prepare_data(config, max_length=4, seed=0)
  np.testing.assert_array_equal(
    data.item_vocabulary.to_original(np.arange(1, 7)), [10, 20, 30, 40, 50, 60]
  )
  np.testing.assert_array_equal(data.cold_items, [False] * 6 + [True])
  year, genres = data.item_features.categorical
  assert year.vocabulary == ("1970-1974", "1980-1984", "1990-1994", "1995-1999")
  np.testing.assert_array_equal(year.values[:, 0], [0, 1, 2, 3, 4, 0, 4])
  assert genres.vocabulary == ("Comedy",)
  np.testing.assert_array_equal(data.item_features.has_features, [0, 1, 1, 1, 1, 0, 1])


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"item_side_path": "s.csv"}, "needs the columns"),
    ({"item_numeric": ("price",)}, "set data.item_side_path"),
    ({"item_side_path": "s.csv", "item_numeric": ("a",), "item_categorical": ("a",)}, "twice"),
    ({"item_side_path": "s.csv", "movielens_side_features": True, "item_numeric": ("a",)}, "one"),
    ({"source": "synthetic", "item_content_path": "c.npy"}, "public logs"),
  ],
)
def test_data_config_checks_the_item_feature_fields(fields, message):
  with pytest.raises(ValueError, match=message):
    DataConfig(**{"source": "sasrec", "path": "log.txt", **fields})


def test_data_config_item_columns_read_back_from_json_as_tuples():
  config = DataConfig(source="sasrec", item_side_path="s.csv", item_numeric=["price"])
  assert config.item_numeric == ("price",)
