"""experiments.prepare: the data card of a prepared log, its split checksum, and its refusals."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from hang_guard import HANG_SECONDS
from tensorflow_datasets.core import shuffle as tfds_shuffle

from unipinrec.bench.movielens_shaped import ML20M_MOVIES, ML20M_ROWS, write_movielens_shaped
from unipinrec.data import tfds_builders
from unipinrec.data.readers import read_interactions
from unipinrec.data.sequences import build_sequences, leave_last_out, split_checksum

REPO = pathlib.Path(__file__).resolve().parent.parent
ML100K = "experiments/configs/ml100k.py"
ML100K_SHA256 = "8f3b88cbb3eaacfb5ead5835b8066ed9acb2bcbd065342d2b35a5ed66242e076"  # SPLITS.md


def _prepare(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "experiments.prepare", *args],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )


def _printed_sha256(done: subprocess.CompletedProcess) -> str:
  assert done.returncode == 0, done.stderr
  assert re.search(
    r"prepared in [\d.]+ s \(imports excluded\); peak RSS [\d.]+ GiB", done.stdout
  ), done.stdout
  return re.search(r"split sha256 ([0-9a-f]{64})", done.stdout).group(1)


def test_prepare_prints_the_split_training_reads(tmp_path):
  folder = write_movielens_shaped(tmp_path / "ml", 3_000, seed=1)
  done = _prepare(
    f"--config={ML100K}", f"--config.data.path={folder}", f"--config.data.tfds_dir={tmp_path}/t"
  )
  sequences = build_sequences(read_interactions(folder))
  assert _printed_sha256(done) == split_checksum(sequences, leave_last_out(sequences))
  assert f"data card: {folder}" in done.stdout
  assert list((tmp_path / "t" / "user_sequences").glob("ml-movielens-*/*/*.array_record*"))


def test_prepare_ml100k_keeps_the_published_split(shared_data_dir, tmp_path):
  path = shared_data_dir / "ml-100k"
  done = _prepare(
    f"--config={ML100K}", f"--config.data.path={path}", f"--config.data.tfds_dir={tmp_path}"
  )
  assert _printed_sha256(done) == ML100K_SHA256


def test_prepare_refuses_the_synthetic_source():
  done = _prepare("--config=experiments/configs/synthetic.py")
  assert done.returncode == 2
  assert done.stderr.count("\n") == 1 and "nothing to prepare" in done.stderr


def test_a_split_past_tfds_memory_buffer_needs_no_tensorflow(tmp_path, monkeypatch):
  # TFDS spills a split past MAX_MEM_BUFFER_SIZE through tf.io.gfile; TensorFlow is not here.
  monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 100)
  folder = write_movielens_shaped(tmp_path / "ml", 2_000)
  sequences = tfds_builders.load_user_sequences(folder, tmp_path / "tfds")
  reference = build_sequences(read_interactions(folder))
  np.testing.assert_array_equal(sequences.items, reference.items)
  np.testing.assert_array_equal(sequences.lines, reference.lines)
  assert tfds_shuffle.MAX_MEM_BUFFER_SIZE == 100


def test_movielens_shaped_files(tmp_path):
  rows = 300_000
  folder = write_movielens_shaped(tmp_path / "ml", rows, seed=3)
  assert (folder / "ratings.csv").read_text().startswith("userId,movieId,rating,timestamp\n")
  data = read_interactions(folder)
  assert len(data) == rows
  users = np.unique(data.users)
  assert len(users) == round(138_493 * rows / ML20M_ROWS)
  assert len(data.item_titles) == round(ML20M_MOVIES * rows / ML20M_ROWS)
  assert set(np.unique(data.items).tolist()) <= set(data.item_titles)
  assert np.all(np.diff(data.users) >= 0)  # each user's rows contiguous, users in order
  assert np.bincount(data.users)[users].min() >= 20
  assert set(np.unique(data.ratings).tolist()) == {s / 2 for s in range(1, 11)}
  same_user = data.users[1:] == data.users[:-1]
  assert np.mean(np.diff(data.timestamps)[same_user] >= 0) > 0.9  # roughly in time order
  assert any(genres and len(genres) > 1 for genres in data.item_genres.values())
  assert all(1915 <= year < 2015 for year in data.item_years.values())
  counts = np.sort(np.bincount(data.items))[::-1]
  assert counts[: len(counts) // 100].sum() > 0.1 * rows  # a long tail: the top 1% hold >10%
