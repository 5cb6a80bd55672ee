"""The TFDS per-user builder: stable time order, build once per source, atomic builds, grain."""

import os
import pathlib
import sys

import numpy as np
import pytest

from unipinrec.data import readers, tfds_builders
from unipinrec.data.interactions import Interactions
from unipinrec.data.sequences import build_sequences, leave_last_out, split_checksum, user_records

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


def _assert_matches(source, reference: dict[int, dict[str, np.ndarray]]) -> None:
  assert len(source) == len(reference)
  users = [int(source[i]["user"]) for i in range(len(source))]
  assert users == sorted(reference)  # record i is the i-th user in ascending id
  for i, user in enumerate(users):
    for key, expected in reference[user].items():
      np.testing.assert_array_equal(source[i][key], expected, err_msg=f"user {user} {key}")


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
  examples = {int(r["user"]): r for r in user_records(interactions)}
  assert list(examples) == [1, 2, 3]
  np.testing.assert_array_equal(examples[3]["items"], [9, 8, 8, 7, 8])
  np.testing.assert_array_equal(examples[3]["lines"], [3, 1, 4, 6, 8])
  reference = _reference(interactions)
  for user, example in examples.items():
    assert example["user"] == user
    for key, expected in reference[user].items():
      np.testing.assert_array_equal(example[key], expected, err_msg=f"user {user} {key}")
      assert example[key].dtype == (np.int32 if key == "outcomes" else np.int64)


def test_builds_per_user_sequences_from_sasrec_file(sasrec_file, tmp_path):
  source = tfds_builders.prepare_user_sequences(sasrec_file, tmp_path / "tfds", format="sasrec")
  _assert_matches(source, _reference(readers.read_interactions(sasrec_file, "sasrec")))
  for i in range(len(source)):
    user = int(source[i]["user"])
    assert source[i]["lines"].tolist() == SASREC_LINES[user]
  assert source[2]["items"].tolist() == [30, 31, 30]  # user 7: the repeat stays
  # The layout the module docstring describes: name/config/version/ with ArrayRecord files.
  (config_dir,) = (tmp_path / "tfds" / "user_sequences").iterdir()
  assert config_dir.name.startswith("tiny-sasrec-")
  files = {p.name for p in (config_dir / "1.0.0").iterdir()}
  assert "user_sequences-train.array_record-00000-of-00001" in files
  assert {"dataset_info.json", "features.json"} <= files
  assert "tensorflow" not in sys.modules  # written and read back without TensorFlow


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
  _assert_matches(changed, _reference(readers.read_interactions(sasrec_file, "sasrec")))
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
  _assert_matches(source, _reference(readers.read_interactions(sasrec_file, "sasrec")))
  config_dir = tfds_builders.user_sequences_builder(
    sasrec_file, data_dir, "sasrec"
  ).data_path.parent
  assert [p.name for p in config_dir.iterdir()] == ["1.0.0"]  # no temporary folder left


def test_loaded_sequences_equal_reading_directly(tmp_path):
  # A u.data file: ratings give the outcome names, which travel in the data set's metadata.
  folder = tmp_path / "ml-tiny"
  folder.mkdir()
  rows = [(2, 10, 5, 30), (1, 11, 3, 20), (2, 12, 2, 10), (1, 10, 4, 20), (2, 11, 4, 30)]
  (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
  loaded = tfds_builders.load_user_sequences(folder, tmp_path / "tfds", format="movielens")
  direct = build_sequences(readers.read_interactions(folder, "movielens"))
  assert loaded.outcome_names == direct.outcome_names == ("low", "high")
  for name in ("user_ids", "item_ids", "offsets", "items", "timestamps", "outcomes", "lines"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(direct, name), err_msg=name)
  # User 2: item 12 (t 10) before 10 and 11, which tie at t 30 and keep file order.
  np.testing.assert_array_equal(loaded.item_ids[loaded.items[2:]], [12, 10, 11])


@pytest.mark.parametrize(
  "relative, format, users, interactions, sha256",
  [
    (
      "ml-100k",
      "movielens",
      943,
      100_000,
      "8f3b88cbb3eaacfb5ead5835b8066ed9acb2bcbd065342d2b35a5ed66242e076",
    ),
    (
      "amazon-games/games.txt",
      "sasrec",
      31_013,
      287_107,
      "2e5c1793a3bcb9cdab3a93a1c7715af1603098b8f91f94cc93706b78f37035f3",
    ),
  ],
)
def test_public_data_sets(shared_data_dir, tmp_path, relative, format, users, interactions, sha256):
  sequences = tfds_builders.load_user_sequences(
    shared_data_dir / relative, tmp_path / "tfds", format=format
  )
  assert (sequences.num_users, len(sequences.items)) == (users, interactions)
  # The last two items of every sequence are PROTOCOL.md's test and validation targets.
  assert split_checksum(sequences, leave_last_out(sequences)) == sha256
