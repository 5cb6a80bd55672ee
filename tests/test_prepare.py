"""experiments.prepare: the data card of a prepared log, its split checksum, and its refusals."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from hang_guard import HANG_SECONDS

from unipinrec.bench.movielens_shaped import write_movielens_shaped
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


@pytest.mark.slow  # a launcher: its imports alone take seconds
def test_prepare_prints_the_split_training_reads(tmp_path):
  folder = write_movielens_shaped(tmp_path / "ml", 3_000, seed=1)
  done = _prepare(
    f"--config={ML100K}", f"--config.data.path={folder}", f"--config.data.tfds_dir={tmp_path}/t"
  )
  sequences = build_sequences(read_interactions(folder))
  assert _printed_sha256(done) == split_checksum(sequences, leave_last_out(sequences))
  assert f"data card: {folder}" in done.stdout
  assert list((tmp_path / "t" / "user_sequences").glob("ml-movielens-*/*/*.array_record*"))


@pytest.mark.slow
def test_prepare_ml100k_keeps_the_published_split(shared_data_dir, tmp_path):
  path = shared_data_dir / "ml-100k"
  done = _prepare(
    f"--config={ML100K}", f"--config.data.path={path}", f"--config.data.tfds_dir={tmp_path}"
  )
  assert _printed_sha256(done) == ML100K_SHA256


@pytest.mark.slow
def test_prepare_refuses_the_synthetic_source():
  done = _prepare("--config=experiments/configs/synthetic.py")
  assert done.returncode == 2
  assert done.stderr.count("\n") == 1 and "nothing to prepare" in done.stderr
