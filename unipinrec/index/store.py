"""A usearch index of the item vectors on disk: built, written atomically, loaded, searched.

A directory holds versions side by side and a `current` symbolic link to the
one in use. A write builds the new version in a `.tmp-*` folder, renames it
to its final name, then swaps the link with `os.replace` (atomic on POSIX):
a crash at any point leaves `current` on the previous, complete version, and
the next write removes what the crash left behind.

Each version holds `items.usearch` (HNSW graph, keys are item ids 1..N,
inner-product metric), `item_vectors.npy` ([N + 1, S] float32 model item vectors,
row 0 the padding item, so row i is item i) and `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable

import numpy as np
from usearch.index import Index

from unipinrec.index.manifest import IndexConfig, Manifest, check

CURRENT = "current"
INDEX_FILE = "items.usearch"
VECTORS_FILE = "item_vectors.npy"
MANIFEST_FILE = "manifest.json"
_TEMPORARY_PREFIX = ".tmp-"
_ADD_CHUNK = 65536  # vectors added per call, so that progress can be reported

Progress = Callable[[int, int], None]  # (vectors added, total)


def build(item_vectors: np.ndarray, config: IndexConfig, progress: Progress | None = None) -> Index:
  """An in-memory HNSW index of items 1..N from their [N + 1, D] vectors (row 0 skipped)."""
  num_items, dim = item_vectors.shape[0] - 1, item_vectors.shape[1]
  index = Index(
    ndim=dim,
    metric="ip",
    dtype=config.dtype,
    connectivity=config.connectivity,
    expansion_add=config.expansion_add,
    expansion_search=config.expansion_search,
  )
  for start in range(1, num_items + 1, _ADD_CHUNK):
    stop = min(start + _ADD_CHUNK, num_items + 1)
    index.add(
      np.arange(start, stop, dtype=np.uint64),
      np.ascontiguousarray(item_vectors[start:stop], dtype=np.float32),
    )
    if progress is not None:
      progress(stop - 1, num_items)
  return index


def _fsync_file(path: str) -> None:
  with open(path, "rb") as f:
    os.fsync(f.fileno())


def _remove_stale(directory: str, keep: str | None) -> None:
  """Removes crashed writes' folders and every version but `keep`."""
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if name != CURRENT and name != keep and os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)


def write(
  directory: str,
  manifest: Manifest,
  item_vectors: np.ndarray,
  progress: Progress | None = None,
) -> str:
  """Builds the index of `item_vectors` and makes it `directory`'s current version, atomically.

  Args:
    directory: the index directory (created if absent).
    manifest: what the vectors come from; its `num_items` and `embed_dim` must match them.
    item_vectors: [N + 1, S] the model's item vectors (`ServingModel.item_vectors`), row 0 padding.
    progress: called with (vectors added, total) while the graph is built.

  Returns:
    The path of the new version.
  """
  expected = (manifest.num_items + 1, manifest.embed_dim)
  if item_vectors.shape != expected:
    raise ValueError(f"item vectors have shape {item_vectors.shape}, the manifest says {expected}")
  os.makedirs(directory, exist_ok=True)
  current = os.path.join(directory, CURRENT)
  _remove_stale(directory, keep=os.path.basename(os.path.realpath(current)))
  temporary = tempfile.mkdtemp(dir=directory, prefix=_TEMPORARY_PREFIX)
  try:
    os.chmod(temporary, 0o755)  # mkdtemp's 0o700 would hide the index from other readers
    np.save(os.path.join(temporary, VECTORS_FILE), np.asarray(item_vectors, np.float32))
    build(item_vectors, manifest.index, progress).save(os.path.join(temporary, INDEX_FILE))
    with open(os.path.join(temporary, MANIFEST_FILE), "w") as f:
      f.write(manifest.to_json())
    for name in (VECTORS_FILE, INDEX_FILE, MANIFEST_FILE):
      _fsync_file(os.path.join(temporary, name))
    version = f"v{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    os.rename(temporary, os.path.join(directory, version))
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
  link = os.path.join(directory, f"{_TEMPORARY_PREFIX}link-{uuid.uuid4().hex[:8]}")
  os.symlink(version, link)
  os.replace(link, current)
  _remove_stale(directory, keep=version)
  return os.path.join(directory, version)


def _keys(matches, count: int) -> tuple[np.ndarray, np.ndarray]:
  """[B, count] keys (-1 where missing) and [B] found counts of usearch (Batch)Matches."""
  if hasattr(matches, "counts"):  # BatchMatches: several queries
    return np.array(matches.keys, dtype=np.int64), np.asarray(matches.counts)
  keys = np.full((1, count), -1, np.int64)  # Matches: one query, only what was found
  keys[0, : len(matches.keys)] = matches.keys
  return keys, np.array([len(matches.keys)])


@dataclasses.dataclass
class ItemIndex:
  """A loaded index: the usearch graph, the exported item vectors and the manifest."""

  index: Index
  item_vectors: np.ndarray  # [N + 1, D] float32, memory-mapped when loaded with `view`
  manifest: Manifest
  path: str

  def search(self, queries: np.ndarray, count: int) -> np.ndarray:
    """[B, S] model queries -> [B, K] item ids by decreasing inner product, K = min(count, N).

    Approximate unless the manifest says `exact`. A row the graph walk returns
    short (possible on a tiny or disconnected graph) is searched exhaustively.
    """
    count = min(count, self.manifest.num_items)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    keys, counts = _keys(self.index.search(queries, count, exact=self.manifest.index.exact), count)
    short = np.flatnonzero(counts < count)
    if len(short):
      keys[short] = _keys(self.index.search(queries[short], count, exact=True), count)[0]
    return keys


def load(directory: str, view: bool = True, expected: Manifest | None = None) -> ItemIndex:
  """The current version in `directory`, memory-mapped when `view` (large catalogues).

  Raises:
    FileNotFoundError: no index was ever completed in `directory`.
    IndexMismatchError: `expected` is given and the index was built from another model.
  """
  current = os.path.join(directory, CURRENT)
  if not os.path.exists(current):
    raise FileNotFoundError(f"no index in {os.path.abspath(directory)} (no '{CURRENT}' version)")
  path = os.path.realpath(current)
  with open(os.path.join(path, MANIFEST_FILE)) as f:
    manifest = Manifest.from_json(f.read())
  if expected is not None:
    check(manifest, expected, path)
  index = Index.restore(os.path.join(path, INDEX_FILE), view=view)
  index.expansion_search = manifest.index.expansion_search
  vectors = np.load(os.path.join(path, VECTORS_FILE), mmap_mode="r" if view else None)
  if len(index) != manifest.num_items or vectors.shape != (
    manifest.num_items + 1,
    manifest.embed_dim,
  ):
    raise ValueError(
      f"{path}: {len(index)} indexed items and vectors of shape {vectors.shape} do not match the "
      f"manifest ({manifest.num_items} items of width {manifest.embed_dim})"
    )
  return ItemIndex(index=index, item_vectors=vectors, manifest=manifest, path=path)
