"""The Beam path of the TFDS builder writes the local build's bytes (DirectRunner)."""

import glob
import pathlib

import numpy as np
import pytest

pytest.importorskip(
  "apache_beam", reason="apache-beam is not installed: the Beam path needs pip install -e '.[beam]'"
)

from array_record.python.array_record_module import ArrayRecordReader  # noqa: E402

from unipinrec.data import beam_sequences, tfds_builders  # noqa: E402
from unipinrec.data.readers import read_interactions  # noqa: E402
from unipinrec.data.sequences import user_records  # noqa: E402
from unipinrec.data.vocabulary import ItemVocabulary  # noqa: E402

# user, item, rating, timestamp: users out of order and interleaved, a timestamp tie (user 3's
# items 20 and 10 at 100, kept in file order), a repeated row (user 12's item 5 twice).
U_DATA = "3\t20\t4\t100\n12\t5\t3\t50\n3\t10\t5\t100\n1\t7\t1\t10\n12\t5\t3\t50\n3\t7\t2\t90\n"


def _build(source: pathlib.Path, data_dir: pathlib.Path, **beam) -> pathlib.Path:
  """Builds `source` into `data_dir` and returns the version folder."""
  tfds_builders.prepare_user_sequences(source, data_dir, **beam)
  (version_dir,) = glob.glob(f"{data_dir}/user_sequences/*/{tfds_builders.UserSequences.VERSION}")
  return pathlib.Path(version_dir)


def _records(version_dir: pathlib.Path) -> list[bytes]:
  """Every serialized example in the build's shards, in shard and record order."""
  records = []
  for shard in sorted(version_dir.glob("user_sequences-train.array_record-*")):
    reader = ArrayRecordReader(str(shard))
    records.extend(reader.read_all())
    reader.close()
  return records


def _assert_same_build(source: pathlib.Path, tmp_path: pathlib.Path) -> int:
  """Builds `source` locally and on the DirectRunner; returns the number of records."""
  local = _build(source, tmp_path / "local")
  on_beam = _build(source, tmp_path / "beam", beam_runner="DirectRunner")
  records = _records(local)
  assert records == _records(on_beam)
  assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in on_beam.iterdir())
  for name in (tfds_builders.VOCABULARY_FILE, "metadata.json", "features.json"):
    assert (local / name).read_bytes() == (on_beam / name).read_bytes(), name
  return len(records)


def test_beam_build_writes_the_local_bytes_on_a_small_movielens_file(tmp_path):
  source = tmp_path / "ml" / "u.data"
  source.parent.mkdir()
  source.write_text(U_DATA)
  assert _assert_same_build(source, tmp_path) == 3


@pytest.mark.slow
def test_beam_build_writes_the_local_bytes_on_ml100k(shared_data_dir, tmp_path):
  assert _assert_same_build(shared_data_dir / "ml-100k", tmp_path) == 943


def test_a_users_pieces_join_in_file_order_whatever_order_they_come_in(tmp_path):
  """Rows of one user read in several pieces (a log split over files) give one record."""
  source = tmp_path / "u.data"
  source.write_text(U_DATA)
  interactions = read_interactions(source, "movielens")
  vocabulary = ItemVocabulary.from_items(interactions.items)
  rows = np.flatnonzero(interactions.users == 3)
  pieces = [
    (int(part[0]), beam_sequences._rows(interactions, part)) for part in (rows[:1], rows[1:])
  ]
  user, record = beam_sequences._record((3, pieces[::-1]), vocabulary)
  whole = [r for r in user_records(interactions, vocabulary) if r["user"] == 3]
  assert user == 3
  for name, values in whole[0].items():
    np.testing.assert_array_equal(record[name], values, err_msg=name)
  np.testing.assert_array_equal(vocabulary.to_original(record["items"]), [7, 20, 10])
