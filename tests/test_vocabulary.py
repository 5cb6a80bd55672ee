"""The item vocabulary: internal ids 1..N <-> the data set's own ids, integers or strings."""

import json

import numpy as np
import pytest

from experiments.configs import synthetic
from unipinrec.config import from_mapping
from unipinrec.data.dataset import DataConfig, prepare_data
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.vocabulary import VOCABULARY_FORMAT, ItemVocabulary, sorted_distinct


def test_integer_ids_map_both_ways_and_unknown_ids_give_zero():
  vocabulary = ItemVocabulary.from_items([50, 7, 50, 1000, 7])
  assert len(vocabulary) == 3 and vocabulary.is_integer
  np.testing.assert_array_equal(vocabulary.to_original([0, 1, 2, 3]), [0, 7, 50, 1000])
  internal = vocabulary.to_internal([[7, 50, 1000], [8, -1, 2000]])
  np.testing.assert_array_equal(internal, [[1, 2, 3], [0, 0, 0]])  # the shape is kept
  assert internal.dtype == np.int32
  np.testing.assert_array_equal(vocabulary.to_internal(vocabulary.to_original([3, 1])), [3, 1])
  assert vocabulary.to_internal(np.zeros(0, np.int64)).shape == (0,)


def test_ids_in_any_order_keep_their_internal_ids():
  vocabulary = ItemVocabulary([30, 10, 20])  # internal 1, 2, 3, not in ascending order
  np.testing.assert_array_equal(vocabulary.to_internal([10, 20, 30, 25]), [2, 3, 1, 0])
  np.testing.assert_array_equal(vocabulary.to_original([1, 2, 3]), [30, 10, 20])


def test_string_ids_map_both_ways_and_unknown_ids_give_zero():
  vocabulary = ItemVocabulary.from_items(["B00X", "0001", "A9", "B00X"])
  assert len(vocabulary) == 3 and not vocabulary.is_integer
  assert vocabulary.to_original([1, 2, 3, 0]).tolist() == ["0001", "A9", "B00X", ""]
  internal = vocabulary.to_internal(["A9", "B00XX", "0001", "1", "", "B00X"])
  np.testing.assert_array_equal(internal, [2, 0, 1, 0, 0, 3])


def test_the_other_kind_of_id_is_a_type_error_not_a_miss():
  with pytest.raises(TypeError, match="integer ids"):
    ItemVocabulary.identity(3).to_internal(["1"])
  with pytest.raises(TypeError, match="string ids"):
    ItemVocabulary(["a"]).to_internal([1])


@pytest.mark.parametrize(
  "ids, error, pattern",
  [
    ([3, 1, 3], ValueError, "distinct; repeated: \\[3\\]"),
    (["a", ""], ValueError, "empty strings"),
    ([1.5, 2.0], TypeError, "integers or strings"),
    ([[1, 2]], ValueError, "one-dimensional"),
  ],
)
def test_bad_ids(ids, error, pattern):
  with pytest.raises(error, match=pattern):
    ItemVocabulary(ids)


def test_internal_ids_out_of_range():
  with pytest.raises(ValueError, match="in 0..3, got 1..4"):
    ItemVocabulary.identity(3).to_original([1, 4])


@pytest.mark.parametrize(
  "vocabulary",
  [
    ItemVocabulary.from_items([1000, 7, 50]),
    ItemVocabulary.from_items(["B00X", "0001", "A9"]),
    ItemVocabulary.identity(5),
    ItemVocabulary.identity(0),
  ],
  ids=["integers", "strings", "identity", "empty"],
)
def test_save_and_load_keep_ids_and_their_kind(tmp_path, vocabulary):
  path = tmp_path / "items.json"
  vocabulary.save(path)
  loaded = ItemVocabulary.load(path)
  assert loaded == vocabulary and loaded.is_integer == vocabulary.is_integer
  n = len(vocabulary)
  assert (
    loaded.to_original(np.arange(n + 1)).tolist()
    == vocabulary.to_original(np.arange(n + 1)).tolist()
  )
  assert json.loads(path.read_text())["format"] == VOCABULARY_FORMAT


@pytest.mark.parametrize(
  "content, field",
  [
    (b'{"format": "unipinrec.item_vocabulary.v1", "ids": [1, 2', None),  # truncated
    (b"\xff\xfe not text", None),
    (b"[1, 2, 3]", "format"),
    (b'{"format": "something.else", "ids": [1]}', "format"),
    (b'{"format": "unipinrec.item_vocabulary.v1"}', "ids"),
    (b'{"format": "unipinrec.item_vocabulary.v1", "ids": [1, "a"]}', "ids"),
    (b'{"format": "unipinrec.item_vocabulary.v1", "ids": [true, false]}', "ids"),
    (b'{"format": "unipinrec.item_vocabulary.v1", "ids": [1.5]}', "ids"),
    (b'{"format": "unipinrec.item_vocabulary.v1", "ids": [4, 4]}', "ids"),
    (b'{"format": "unipinrec.item_vocabulary.v1", "ids": [99999999999999999999]}', "ids"),
  ],
)
def test_a_malformed_file_is_an_error_naming_it(tmp_path, content, field):
  path = tmp_path / "items.json"
  path.write_bytes(content)
  with pytest.raises(DataFormatError) as error:
    ItemVocabulary.load(path)
  assert str(path) in str(error.value) and error.value.path == str(path)
  assert error.value.field == field


# Two users, four actions each; ASIN-like ids (one with a leading zero), two named surfaces.
ACTIONS = (
  "uid,asin,when,where\n"
  "7,B00X,5,home\n2,0102,1,search\n7,A9,2,home\n2,B00X,3,home\n"
  "7,0102,6,search\n2,A9,4,home\n7,D2,7,home\n2,C1,8,search\n"
)
COLUMNS = {"user": "uid", "item": "asin", "timestamp": "when", "surface": "where"}


def test_prepared_data_carry_the_vocabulary_and_surface_names(tmp_path):
  path = tmp_path / "log.csv"
  path.write_text(ACTIONS)
  config = DataConfig(
    source="actions", path=str(path), columns=COLUMNS, tfds_dir=str(tmp_path / "tfds")
  )
  data = prepare_data(config, max_length=4, seed=0)
  vocabulary = data.item_vocabulary
  assert vocabulary.to_original([1, 2, 3, 4, 5]).tolist() == ["0102", "A9", "B00X", "C1", "D2"]
  assert data.logs.num_items == len(vocabulary)
  assert data.logs.surface_names == ("home", "search")
  # User 2 (first): 0102, B00X, then A9 and C1, the validation and test targets.
  first = data.logs.action_items[data.logs.action_offsets[0] : data.logs.action_offsets[1]]
  assert vocabulary.to_original(first).tolist() == ["0102", "B00X"]
  targets = vocabulary.to_original(data.eval_examples.retrieval_targets)
  assert targets.tolist() == ["C1", "D2"]  # user 2's test target, then user 7's


def test_synthetic_data_get_the_identity_vocabulary():
  run = from_mapping(synthetic.get_config("runlocal").to_dict())
  data = prepare_data(run.data, run.model.max_length, run.seed)
  assert data.item_vocabulary == ItemVocabulary.identity(data.logs.num_items)


@pytest.mark.parametrize(
  "values",
  [
    np.zeros(0, np.int64),
    np.array([5, -1, 5, 3, 3], np.int64),
    np.array(["b", "a", "b", "ab"]),
    np.repeat(np.arange(50), 7) * 1001 + np.tile(np.arange(7), 50),  # user * N + item keys
  ],
)
def test_sorted_distinct_is_np_unique(values):
  got, want = sorted_distinct(values), np.unique(values)
  assert got.dtype == want.dtype
  np.testing.assert_array_equal(got, want)


def test_identity_vocabulary_maps_as_the_table_of_its_ids():
  identity = ItemVocabulary.identity(6)
  table = ItemVocabulary(np.arange(1, 7))
  assert identity == table and table == identity and len(identity) == 6
  queries = np.asarray([[0, 1, 6], [7, -3, 4]])
  np.testing.assert_array_equal(identity.to_internal(queries), table.to_internal(queries))
  assert identity.to_internal(queries).dtype == np.int32
  np.testing.assert_array_equal(identity.to_original([0, 3, 6]), table.to_original([0, 3, 6]))
  with pytest.raises(ValueError, match="0..6"):
    identity.to_original([7])
