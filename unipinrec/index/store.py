"""A usearch index of the item vectors on disk: built, written atomically, loaded, searched.

A directory holds versions side by side and a `current` symbolic link to the
one in use, written as `unipinrec/versions.py` says: a crash at any point leaves
`current` on the previous, complete version. `save` and `load_files` write and read one
version's files in a folder of the caller's (the serving bundle's `index/`).

Each version holds `items.usearch` (HNSW graph, keys are item ids 1..N,
inner-product metric), `item_vectors.npy` ([N + 1, S] float32 model item vectors,
row 0 the padding item, so row i is item i) and `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
from usearch.index import Index

from unipinrec import versions
from unipinrec.index.manifest import IndexConfig, Manifest, check

CURRENT = versions.CURRENT
INDEX_FILE = "items.usearch"
VECTORS_FILE = "item_vectors.npy"
MANIFEST_FILE = "manifest.json"
_ADD_CHUNK = 65536  # vectors added per call, so that progress can be reported

Progress = Callable[[int, int], None]  # (vectors added, total)


def build(item_vectors: np.ndarray, config: IndexConfig, progress: Progress | None = None) -> Index:
  """An in-memory HNSW index of items 1..N from their [N + 1, D] vectors (row 0 skipped).

  Built on one thread, so it is reproducible: an index rebuilt from the same vectors (a
  bundle's, a work directory's) answers exactly alike.
  """
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
      threads=1,  # one insertion order: the same vectors always give the same graph
    )
    if progress is not None:
      progress(stop - 1, num_items)
  return index


def save(
  folder: str,
  manifest: Manifest,
  item_vectors: np.ndarray,
  progress: Progress | None = None,
) -> None:
  """Builds the index of `item_vectors` and writes its files into the existing `folder`.

  Args:
    folder: where the version's three files go.
    manifest: what the vectors come from; its `num_items` and `embed_dim` must match them.
    item_vectors: [N + 1, S] the model's item vectors (`ServingModel.item_vectors`), row 0 padding.
    progress: called with (vectors added, total) while the graph is built.
  """
  expected = (manifest.num_items + 1, manifest.embed_dim)
  if item_vectors.shape != expected:
    raise ValueError(f"item vectors have shape {item_vectors.shape}, the manifest says {expected}")
  np.save(os.path.join(folder, VECTORS_FILE), np.asarray(item_vectors, np.float32))
  build(item_vectors, manifest.index, progress).save(os.path.join(folder, INDEX_FILE))
  with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
    f.write(manifest.to_json())


def extend(source: str, folder: str, vectors: np.ndarray) -> Manifest:
  """Writes into the existing `folder` the index whose files are in `source`, with `vectors`
  added as items N+1..N+M (usearch `add`: the graph is not rebuilt), and its manifest.

  Args:
    source: a folder `save` (or `extend`) wrote, of N items.
    folder: where the extended index's files go.
    vectors: [M, S] the new items' vectors, in the order of their ids.

  Returns:
    The new manifest: the source's, with N + M items.
  """
  old = load_files(source, view=False)
  num_items = old.manifest.num_items
  if vectors.ndim != 2 or vectors.shape[1] != old.manifest.embed_dim:
    raise ValueError(
      f"new item vectors of shape {vectors.shape} for an index of width {old.manifest.embed_dim}"
    )
  vectors = np.ascontiguousarray(vectors, dtype=np.float32)
  keys = np.arange(num_items + 1, num_items + 1 + len(vectors), dtype=np.uint64)
  old.index.add(keys, vectors, threads=1)  # as `build` adds: one insertion order
  manifest = dataclasses.replace(old.manifest, num_items=num_items + len(vectors))
  np.save(os.path.join(folder, VECTORS_FILE), np.concatenate([old.item_vectors, vectors]))
  old.index.save(os.path.join(folder, INDEX_FILE))
  with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
    f.write(manifest.to_json())
  return manifest


def write(
  directory: str,
  manifest: Manifest,
  item_vectors: np.ndarray,
  progress: Progress | None = None,
) -> str:
  """`save`s the index into a new version of `directory` and makes it current, atomically.

  Returns:
    The path of the new version.
  """
  return versions.publish(directory, lambda folder: save(folder, manifest, item_vectors, progress))


def _keys(matches, count: int) -> tuple[np.ndarray, np.ndarray]:
  """[B, count] keys (-1 where missing) and [B] found counts of usearch (Batch)Matches."""
  if hasattr(matches, "counts"):  # BatchMatches: several queries
    return np.array(matches.keys, dtype=np.int64), np.asarray(matches.counts)
  keys = np.full((1, count), -1, np.int64)  # Matches: one query, only what was found
  keys[0, : len(matches.keys)] = matches.keys
  return keys, np.array([len(matches.keys)])


def search(index: Index, queries: np.ndarray, count: int, exact: bool) -> np.ndarray:
  """[B, S] queries -> [B, K] item ids of `index` by decreasing inner product, K = min(count,
  items); exhaustive when `exact`. A row the graph walk returns short (possible on a tiny or
  disconnected graph) is searched exhaustively."""
  count = min(count, len(index))
  queries = np.ascontiguousarray(queries, dtype=np.float32)
  keys, counts = _keys(index.search(queries, count, exact=exact), count)
  short = np.flatnonzero(counts < count)
  if len(short):
    keys[short] = _keys(index.search(queries[short], count, exact=True), count)[0]
  return keys


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
    return search(self.index, queries, count, self.manifest.index.exact)


def load(directory: str, view: bool = True, expected: Manifest | None = None) -> ItemIndex:
  """The current version in `directory` (`load_files` of it).

  Raises:
    FileNotFoundError: no index was ever completed in `directory`.
    IndexMismatchError: `expected` is given and the index was built from another model.
  """
  path = versions.current(directory)
  if path is None:
    raise FileNotFoundError(f"no index in {os.path.abspath(directory)} (no '{CURRENT}' version)")
  return load_files(path, view, expected)


def load_files(path: str, view: bool = True, expected: Manifest | None = None) -> ItemIndex:
  """The index whose files `save` wrote in `path`, memory-mapped when `view` (large catalogues).

  Raises:
    IndexMismatchError: `expected` is given and the index was built from another model.
  """
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
