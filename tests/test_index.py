"""The usearch item index: search against NumPy, the manifest check, and atomic writes."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from unipinrec import versions
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig, IndexMismatchError, Manifest

NUM_ITEMS, DIM = 500, 8


def _vectors(seed: int) -> np.ndarray:
  vectors = np.random.default_rng(seed).normal(size=(NUM_ITEMS + 1, DIM)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  vectors[0] = 0.0  # the padding row, never indexed
  return vectors


def _manifest(step: int = 7, exact: bool = True) -> Manifest:
  return Manifest(
    step=step,
    config_hash="abc123",
    num_items=NUM_ITEMS,
    embed_dim=DIM,
    outcome_names=("click", "save"),
    index=IndexConfig(
      dtype="f32", connectivity=8, expansion_add=64, expansion_search=64, exact=exact
    ),
  )


def test_exact_search_is_numpy_top_k_and_loads_memory_mapped(tmp_path):
  vectors = _vectors(0)
  store.write(str(tmp_path), _manifest(), vectors)
  index = store.load(str(tmp_path), view=True, expected=_manifest())
  queries = _vectors(1)[1:6]
  expected = np.argsort(-(queries @ vectors[1:].T), axis=1)[:, :10] + 1
  np.testing.assert_array_equal(index.search(queries, 10), expected)
  assert isinstance(index.item_vectors, np.memmap)
  np.testing.assert_array_equal(index.item_vectors, vectors)
  assert index.manifest == _manifest()
  # More candidates than items: every item, once.
  assert sorted(index.search(queries[:1], NUM_ITEMS + 50)[0]) == list(range(1, NUM_ITEMS + 1))


def test_hnsw_search_recalls_the_exact_top_k(tmp_path):
  vectors = _vectors(0)
  store.write(str(tmp_path), _manifest(exact=False), vectors)
  index = store.load(str(tmp_path), view=False)
  queries = _vectors(2)[1:21]
  exact = np.argsort(-(queries @ vectors[1:].T), axis=1)[:, :10] + 1
  found = index.search(queries, 10)
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
  assert recall >= 0.9


@pytest.mark.parametrize(
  "change, named",
  [
    ({"step": 8}, "step: index has 7, model has 8"),
    ({"config_hash": "other"}, "config_hash"),
    ({"num_items": NUM_ITEMS + 1}, "num_items"),
    ({"embed_dim": DIM * 2}, "embed_dim"),
  ],
)
def test_an_index_of_another_model_is_refused_naming_the_mismatch(tmp_path, change, named):
  store.write(str(tmp_path), _manifest(), _vectors(0))
  expected = dataclasses.replace(_manifest(), **change)
  with pytest.raises(IndexMismatchError, match=named):
    store.load(str(tmp_path), expected=expected)
  # Index settings are not identity: another expansion_search is accepted.
  other_settings = dataclasses.replace(_manifest(), index=IndexConfig(expansion_search=999))
  assert store.load(str(tmp_path), expected=other_settings).manifest.step == 7


def test_missing_index_and_wrong_vector_shape_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no index"):
    store.load(str(tmp_path / "absent"))
  with pytest.raises(ValueError, match="manifest says"):
    store.write(str(tmp_path), _manifest(), _vectors(0)[:-1])


def test_a_crash_mid_write_leaves_the_previous_index_current(tmp_path):
  directory = str(tmp_path)
  first = _vectors(0)
  store.write(directory, _manifest(step=1), first)
  # A second write killed (os._exit, no clean-up) while the graph is being built.
  script = textwrap.dedent(
    f"""
    import os, numpy as np
    from unipinrec.index import store
    from unipinrec.index.manifest import IndexConfig, Manifest
    manifest = Manifest(2, "abc123", {NUM_ITEMS}, {DIM}, ("click", "save"), IndexConfig())
    vectors = np.ones(({NUM_ITEMS} + 1, {DIM}), np.float32) / np.sqrt({DIM})
    store.write({directory!r}, manifest, vectors, progress=lambda done, total: os._exit(3))
    """
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  crashed = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True)
  assert crashed.returncode == 3, crashed.stderr.decode()
  leftovers = [n for n in os.listdir(directory) if n.startswith(".tmp-")]
  assert leftovers, "the crashed write should have left its temporary folder"

  index = store.load(directory, expected=_manifest(step=1))
  np.testing.assert_array_equal(index.item_vectors, first)
  query = first[5:6]
  assert index.search(query, 1)[0, 0] == 5

  # The next write completes, becomes current and removes the leftovers and the old version.
  store.write(directory, _manifest(step=3), _vectors(4))
  assert store.load(directory).manifest.step == 3
  assert sorted(os.listdir(directory)) == sorted(
    [store.CURRENT, os.path.basename(os.path.realpath(os.path.join(directory, store.CURRENT)))]
  )


def test_an_exception_mid_write_removes_its_temporary_folder(tmp_path, monkeypatch):
  directory = str(tmp_path)
  store.write(directory, _manifest(step=1), _vectors(0))

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(versions, "fsync_tree", fail)
  with pytest.raises(OSError, match="disk full"):
    store.write(directory, _manifest(step=2), _vectors(1))
  assert not [n for n in os.listdir(directory) if n.startswith(".tmp-")]
  assert store.load(directory).manifest.step == 1
