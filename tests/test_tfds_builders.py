"""The TFDS per-user builder: stable time order, build once per source, atomic builds, grain."""

import os
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordReader
from tensorflow_datasets.proto import tf_example_pb2

from unipinrec.data import readers, tfds_builders
from unipinrec.data.interactions import Interactions
from unipinrec.data.sequences import (
  build_sequences,
  leave_last_out,
  split_checksum,
  to_user_logs,
  user_records,
)
from unipinrec.data.vocabulary import ItemVocabulary

# 4 users; user 7's lines (1, 4, 6) are not contiguous and hold a repeated item (30).
SASREC_TEXT = "7 30\n2 11\n2 12\n7 31\n5 40\n7 30\n9 50\n9 51\n9 52\n"
SASREC_LINES = {2: [2, 3], 5: [5], 7: [1, 4, 6], 9: [7, 8, 9]}


def _reference(interactions: Interactions) -> dict[int, dict[str, np.ndarray]]:
  """Per user, the rows sorted by timestamp with a stable sort (ties in file order)."""
  reference = {}
  for user in np.unique(interactions.users):
    rows = np.flatnonzero(interactions.users == user)
    rows = rows[np.argsort(interactions.timestamps[rows], kind="stable")]
    reference[int(user)] = {
      "items": interactions.items[rows],
      "timestamps": interactions.timestamps[rows],
      "outcomes": interactions.outcomes[rows],
      "lines": interactions.lines[rows],
    }
  return reference


def _vocabulary(sasrec_file: pathlib.Path, data_dir: pathlib.Path) -> ItemVocabulary:
  """The item vocabulary stored beside a built data set's records."""
  builder = tfds_builders.user_sequences_builder(sasrec_file, data_dir, "sasrec")
  return ItemVocabulary.load(builder.data_path / tfds_builders.VOCABULARY_FILE)


def _assert_matches(source, sasrec_file: pathlib.Path, data_dir: pathlib.Path) -> None:
  """The built records are the file's rows per user, items mapped back by the stored vocabulary."""
  reference = _reference(readers.read_interactions(sasrec_file, "sasrec"))
  vocabulary = _vocabulary(sasrec_file, data_dir)
  assert len(source) == len(reference)
  users = [int(source[i]["user"]) for i in range(len(source))]
  assert users == sorted(reference)  # record i is the i-th user in ascending id
  for i, user in enumerate(users):
    for key, expected in reference[user].items():
      values = vocabulary.to_original(source[i][key]) if key == "items" else source[i][key]
      np.testing.assert_array_equal(values, expected, err_msg=f"user {user} {key}")


@pytest.fixture
def sasrec_file(tmp_path: pathlib.Path) -> pathlib.Path:
  path = tmp_path / "source" / "tiny.txt"
  path.parent.mkdir()
  path.write_text(SASREC_TEXT)
  return path


@pytest.fixture
def read_calls(monkeypatch) -> list[str]:
  """Counts the builder's reads of the source, i.e. its builds."""
  calls = []

  def counting_read(path, format="auto", **kwargs):
    calls.append(path)
    return readers.read_interactions(path, format, **kwargs)

  monkeypatch.setattr(tfds_builders, "read_interactions", counting_read)
  return calls


def test_user_examples_sort_stably_by_time_and_keep_duplicates():
  # Out-of-order times, ties between non-adjacent rows, and a duplicate row (user 3, item 8, t 5).
  def a(values, dtype=np.int64):
    return np.asarray(values, dtype)

  interactions = Interactions(
    path="hand-made",
    users=a([3, 1, 3, 3, 1, 3, 2, 3]),
    items=a([8, 4, 9, 8, 5, 7, 6, 8]),
    timestamps=a([5, 20, 1, 5, 10, 5, 0, 5]),
    outcomes=a([0, 1, 1, 0, 0, 1, 1, 0], np.int32),
    outcome_names=("low", "high"),
    lines=a([1, 2, 3, 4, 5, 6, 7, 8]),
  )
  vocabulary = ItemVocabulary.from_items(interactions.items)
  examples = {int(r["user"]): r for r in user_records(interactions, vocabulary)}
  assert list(examples) == [1, 2, 3]
  np.testing.assert_array_equal(examples[3]["items"], [6, 5, 5, 4, 5])  # 4..9 -> 1..6
  np.testing.assert_array_equal(vocabulary.to_original(examples[3]["items"]), [9, 8, 8, 7, 8])
  np.testing.assert_array_equal(examples[3]["lines"], [3, 1, 4, 6, 8])
  reference = _reference(interactions)
  for user, example in examples.items():
    assert example["user"] == user
    for key, expected in reference[user].items():
      values = vocabulary.to_original(example[key]) if key == "items" else example[key]
      np.testing.assert_array_equal(values, expected, err_msg=f"user {user} {key}")
      assert example[key].dtype == (np.int32 if key in ("items", "outcomes") else np.int64)


def test_builds_per_user_sequences_from_sasrec_file(sasrec_file, tmp_path):
  source = tfds_builders.prepare_user_sequences(sasrec_file, tmp_path / "tfds", format="sasrec")
  _assert_matches(source, sasrec_file, tmp_path / "tfds")
  for i in range(len(source)):
    user = int(source[i]["user"])
    assert source[i]["lines"].tolist() == SASREC_LINES[user]
  # User 7: the repeat stays; items 11, 12, 30, 31, ... are stored as 1, 2, 3, 4, ...
  assert source[2]["items"].tolist() == [3, 4, 3]
  assert _vocabulary(sasrec_file, tmp_path / "tfds").to_original([3, 4, 3]).tolist() == [30, 31, 30]
  # The layout the module docstring describes: name/config/version/ with ArrayRecord files.
  (config_dir,) = (tmp_path / "tfds" / "user_sequences").iterdir()
  assert config_dir.name.startswith("tiny-sasrec-")
  files = {p.name for p in (config_dir / "3.0.0").iterdir()}
  assert "user_sequences-train.array_record-00000-of-00001" in files
  assert {"dataset_info.json", "features.json", tfds_builders.VOCABULARY_FILE} <= files
  assert "tensorflow" not in sys.modules  # written and read back without TensorFlow


def test_examples_are_written_with_their_features_in_name_order(sasrec_file, tmp_path):
  """Protobuf orders a map by a per-process hash seed; name order gives every build one bytes."""
  tfds_builders.prepare_user_sequences(sasrec_file, tmp_path / "tfds", format="sasrec")
  (shard,) = (tmp_path / "tfds").glob(
    f"user_sequences/*/{tfds_builders.UserSequences.VERSION}/*.array_record-*"
  )
  reader = ArrayRecordReader(str(shard))
  records = reader.read_all()
  reader.close()
  assert len(records) == len(SASREC_LINES)
  for record in records:
    canonical = tf_example_pb2.Example.FromString(record).SerializeToString(deterministic=True)
    assert record == canonical


def test_a_beam_build_without_apache_beam_names_the_extra(sasrec_file, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "apache_beam", None)  # import now raises ImportError
  monkeypatch.delitem(sys.modules, "unipinrec.data.beam_sequences", raising=False)
  with pytest.raises(ImportError, match=r"apache-beam.*\[beam\]"):
    tfds_builders.prepare_user_sequences(
      sasrec_file, tmp_path / "tfds", format="sasrec", beam_runner="DirectRunner"
    )


def test_reuses_a_built_source_and_rebuilds_a_changed_one(sasrec_file, tmp_path, read_calls):
  data_dir = tmp_path / "tfds"
  tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")
  builder = tfds_builders.user_sequences_builder(sasrec_file, data_dir, format="sasrec")
  record_file = builder.data_path / "user_sequences-train.array_record-00000-of-00001"
  written = os.stat(record_file).st_mtime_ns
  source = tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")
  assert len(read_calls) == 1 and os.stat(record_file).st_mtime_ns == written
  assert len(source) == 4

  sasrec_file.write_text(SASREC_TEXT + "11 60\n5 41\n")
  changed = tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")
  assert len(read_calls) == 2
  _assert_matches(changed, sasrec_file, data_dir)
  assert [int(changed[i]["user"]) for i in range(len(changed))] == [2, 5, 7, 9, 11]


def test_failed_build_leaves_nothing_that_reads_as_built(sasrec_file, tmp_path, monkeypatch):
  data_dir = tmp_path / "tfds"

  def crash(path, format="auto", **kwargs):
    raise RuntimeError("crash mid-build")

  monkeypatch.setattr(tfds_builders, "read_interactions", crash)
  with pytest.raises(RuntimeError, match="crash mid-build"):
    tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")
  builder = tfds_builders.user_sequences_builder(sasrec_file, data_dir, format="sasrec")
  assert not builder.is_prepared() and not builder.data_path.exists()
  monkeypatch.undo()
  assert len(tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")) == 4


def test_a_build_that_loses_the_race_reads_the_winners_copy(sasrec_file, tmp_path, monkeypatch):
  # While this build reads the source, a "second process" finishes the same build first.
  data_dir = tmp_path / "tfds"
  reads = []

  def racing_read(path, format="auto", **kwargs):
    reads.append(path)
    if len(reads) == 1:  # only the outer build races; the nested one runs to the end
      tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")
    return readers.read_interactions(path, format, **kwargs)

  monkeypatch.setattr(tfds_builders, "read_interactions", racing_read)
  source = tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")
  assert len(reads) == 2
  _assert_matches(source, sasrec_file, data_dir)
  config_dir = tfds_builders.user_sequences_builder(
    sasrec_file, data_dir, "sasrec"
  ).data_path.parent
  assert [p.name for p in config_dir.iterdir()] == ["3.0.0"]  # no temporary folder left


def test_loaded_sequences_equal_reading_directly(tmp_path):
  # A u.data file: ratings give the outcome names, which travel in the data set's metadata.
  folder = tmp_path / "ml-tiny"
  folder.mkdir()
  rows = [(2, 10, 5, 30), (1, 11, 3, 20), (2, 12, 2, 10), (1, 10, 4, 20), (2, 11, 4, 30)]
  (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
  loaded = tfds_builders.load_user_sequences(folder, tmp_path / "tfds", format="movielens")
  direct = build_sequences(readers.read_interactions(folder, "movielens"))
  assert loaded.outcome_names == direct.outcome_names == ("low", "high")
  assert loaded.item_vocabulary == direct.item_vocabulary
  for name in ("user_ids", "offsets", "items", "timestamps", "outcomes", "lines"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(direct, name), err_msg=name)
  # User 2: item 12 (t 10) before 10 and 11, which tie at t 30 and keep file order.
  np.testing.assert_array_equal(loaded.item_vocabulary.to_original(loaded.items[2:]), [12, 10, 11])


def test_a_cached_data_set_gives_the_vocabulary_of_a_fresh_read(tmp_path, read_calls):
  # String item ids (ASINs, one with a leading zero) and named surfaces, through the cache.
  path = tmp_path / "source" / "log.csv"
  path.parent.mkdir()
  path.write_text(
    "uid,asin,when,where\n7,B00X,5,home\n2,0102,1,search\n7,A9,2,home\n2,B00X,3,home\n"
  )
  columns = {"user": "uid", "item": "asin", "timestamp": "when", "surface": "where"}
  first, second = (
    tfds_builders.load_user_sequences(path, tmp_path / "tfds", "actions", columns=columns)
    for _ in range(2)
  )
  assert len(read_calls) == 1  # the second came from the cache
  direct = build_sequences(readers.read_interactions(path, "actions", columns=columns))
  assert first.item_vocabulary == second.item_vocabulary == direct.item_vocabulary
  assert second.item_vocabulary.to_original([1, 2, 3]).tolist() == ["0102", "A9", "B00X"]
  # User 2: 0102 (t 1), B00X (t 3); user 7: A9 (t 2), B00X (t 5).
  originals = second.item_vocabulary.to_original(second.items).tolist()
  assert originals == ["0102", "B00X", "A9", "B00X"]
  assert second.surface_names == direct.surface_names == ("home", "search")
  assert to_user_logs(second).surface_names == ("home", "search")


def test_a_cache_of_an_older_layout_is_rebuilt(sasrec_file, tmp_path, read_calls, monkeypatch):
  # Version 1.0.0 stored original ids and no vocabulary file: this one reads as built.
  data_dir = tmp_path / "tfds"
  with monkeypatch.context() as patch:
    patch.setattr(tfds_builders.UserSequences, "VERSION", tfds.core.Version("1.0.0"))
    tfds_builders.prepare_user_sequences(sasrec_file, data_dir, format="sasrec")
    old = tfds_builders.user_sequences_builder(sasrec_file, data_dir, "sasrec").data_path
  (old / tfds_builders.VOCABULARY_FILE).unlink()
  sequences = tfds_builders.load_user_sequences(sasrec_file, data_dir, format="sasrec")
  assert len(read_calls) == 2 and old.name == "1.0.0"
  assert sequences.item_vocabulary.to_original(sequences.items[-3:]).tolist() == [50, 51, 52]


# Rows read by hand in each file: (line, user, item as the file spells it). The first is the
# first user's first interaction in time order: in ml-100k.inter (line 1 is the header) user 1's
# film 168 on line 59974 ties at 874965478 with film 172 on line 92489 and comes first in the file.
HAND_CHECKED = {
  "ml-100k/ml-100k.inter": [(59974, 1, 168), (2, 196, 242), (95378, 916, 1682)],
  "amazon-games/games.txt": [(1, 1, 6393), (287102, 31011, 23715), (287107, 31013, 23512)],
}


@pytest.mark.parametrize(
  "relative, file, format, users, interactions, sha256",
  [
    (
      "ml-100k",
      "ml-100k/ml-100k.inter",
      "movielens",
      943,
      100_000,
      "8f3b88cbb3eaacfb5ead5835b8066ed9acb2bcbd065342d2b35a5ed66242e076",
    ),
    (
      "amazon-games/games.txt",
      "amazon-games/games.txt",
      "sasrec",
      31_013,
      287_107,
      "2e5c1793a3bcb9cdab3a93a1c7715af1603098b8f91f94cc93706b78f37035f3",
    ),
  ],
)
def test_public_data_sets(
  shared_data_dir, tmp_path, relative, file, format, users, interactions, sha256
):
  sequences = tfds_builders.load_user_sequences(
    shared_data_dir / relative, tmp_path / "tfds", format=format
  )
  assert (sequences.num_users, len(sequences.items)) == (users, interactions)
  # The last two items of every sequence are PROTOCOL.md's test and validation targets.
  assert split_checksum(sequences, leave_last_out(sequences)) == sha256
  vocabulary = sequences.item_vocabulary
  originals = vocabulary.to_original(sequences.items)
  row_users = np.repeat(sequences.user_ids, sequences.lengths)
  rows = HAND_CHECKED[file]
  assert sequences.lines[0] == rows[0][0]
  for line, user, item in rows:
    (row,) = np.flatnonzero(sequences.lines == line)
    assert (row_users[row], originals[row]) == (user, item), f"line {line}"
  # Every row against its line's item, split from the file without the readers.
  text = (shared_data_dir / file).read_text().splitlines()
  raw = np.asarray([text[line - 1].split()[1] for line in sequences.lines.tolist()], np.int64)
  np.testing.assert_array_equal(originals, raw)
  np.testing.assert_array_equal(vocabulary.to_internal(raw), sequences.items)
  assert len(vocabulary) == len(np.unique(raw))
