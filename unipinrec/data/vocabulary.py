"""Internal item ids 1..N <-> the ids as the data set spells them (integers or strings).

Models, logs and examples speak internal ids (0 pads); requests, answers and files speak the
data set's own ids. An `ItemVocabulary` keeps the original id of every internal id and maps
whole arrays both ways without a Python loop per id.

On disk it is a JSON file, `{"format": "unipinrec.item_vocabulary.v1", "ids": [...]}`, where
`ids[i]` is the original id of internal id `i + 1`: JSON keeps integers and strings apart as the
data spell them, needs no pickle (an .npy of strings does not either, but only NumPy reads it),
and any tool can read it; a catalogue of a million ids is a few MB and loads in under a second.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
from numpy.typing import ArrayLike

from unipinrec.data.interactions import DataFormatError

VOCABULARY_FORMAT = "unipinrec.item_vocabulary.v1"


def sorted_distinct(values: np.ndarray) -> np.ndarray:
  """The distinct values of a 1-D array, ascending: `np.unique` by sorting.

  NumPy 2.4's `np.unique` hashes, which degrades badly on patterned integer keys
  (user * N + item, the data card's); a sort does not.
  """
  ordered = np.sort(values)
  return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


class ItemVocabulary:
  """The original id of each internal item id 1..N; internal id 0 is padding and unknown ids.

  Ids are all integers (int64) or all non-empty strings, as the data set spells them.
  """

  def __init__(self, ids: ArrayLike):
    """`ids[i]` is the original id of internal id `i + 1`; ids must be distinct."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
      raise ValueError(f"item ids must be one-dimensional, got shape {ids.shape}")
    if ids.dtype.kind in "iu" or (ids.size == 0 and ids.dtype.kind != "U"):
      ids, padding = ids.astype(np.int64), np.int64(0)
    elif ids.dtype.kind == "U":
      padding = np.str_("")
      if (ids == padding).any():
        raise ValueError("item ids must not be empty strings (the padding's spelling)")
    else:
      raise TypeError(f"item ids must be integers or strings, got {ids.dtype}")
    # A sorted copy with its positions finds many ids at once by binary search.
    self._order = np.argsort(ids, kind="stable")
    self._sorted = ids[self._order]
    repeated = self._sorted[1:][self._sorted[1:] == self._sorted[:-1]]
    if len(repeated):
      raise ValueError(f"item ids must be distinct; repeated: {repeated[:5].tolist()}")
    self._table = np.concatenate([[padding], ids])  # [N + 1], internal id -> original id

  @classmethod
  def from_items(cls, items: ArrayLike) -> ItemVocabulary:
    """The distinct ids of `items` in ascending order (PROTOCOL.md's remapping to 1..N)."""
    return cls(sorted_distinct(np.asarray(items)))

  @classmethod
  def identity(cls, num_items: int) -> ItemVocabulary:
    """Ids 1..N mapped to themselves, for data without ids of its own (the synthetic world)."""
    return IdentityVocabulary(num_items)

  @property
  def is_integer(self) -> bool:
    """Whether the original ids are integers (else strings)."""
    return self._table.dtype.kind == "i"

  def __len__(self) -> int:
    """N, the number of items (padding excluded)."""
    return len(self._table) - 1

  def __eq__(self, other: object) -> bool:
    """The same ids, of the same kind, for the same internal ids."""
    if not isinstance(other, ItemVocabulary):
      return NotImplemented
    return self.is_integer == other.is_integer and np.array_equal(self._table, other._table)

  def __repr__(self) -> str:
    return f"ItemVocabulary({len(self)} {'integer' if self.is_integer else 'string'} ids)"

  def to_internal(self, ids: ArrayLike) -> np.ndarray:
    """Internal ids (int32, the shape of `ids`) of original `ids`; an unknown id gives 0.

    Integer vocabularies take integer ids, string vocabularies strings; another type is a
    `TypeError` rather than a silent 0 for every id.
    """
    query = np.asarray(ids)
    if query.size == 0 or len(self) == 0:
      return np.zeros(query.shape, np.int32)
    if (query.dtype.kind in "iu") != self.is_integer or query.dtype.kind not in "iuU":
      kind = "integer" if self.is_integer else "string"
      raise TypeError(f"a vocabulary of {kind} ids cannot look up ids of dtype {query.dtype}")
    return self._internal(query)

  def _internal(self, query: np.ndarray) -> np.ndarray:
    """`to_internal` of checked, non-empty original ids."""
    position = np.minimum(np.searchsorted(self._sorted, query), len(self._sorted) - 1)
    found = self._sorted[position] == query
    return np.where(found, self._order[position] + 1, 0).astype(np.int32)

  def to_original(self, internal_ids: ArrayLike) -> np.ndarray:
    """Original ids of internal ids 0..N (the shape of `internal_ids`); 0 gives 0 or ""."""
    internal = np.asarray(internal_ids)
    if internal.size == 0:
      return np.zeros(internal.shape, np.int64 if self.is_integer else self._table.dtype)
    if internal.dtype.kind not in "iu":
      raise TypeError(f"internal item ids must be integers, got {internal.dtype}")
    if internal.min() < 0 or internal.max() > len(self):
      raise ValueError(
        f"internal item ids must be in 0..{len(self)}, got {internal.min()}..{internal.max()}"
      )
    return self._original(internal)

  def _original(self, internal: np.ndarray) -> np.ndarray:
    """`to_original` of checked internal ids."""
    return self._table[internal]

  def save(self, path: str | os.PathLike) -> None:
    """Writes the vocabulary as JSON (the module docstring's layout)."""
    payload = {"format": VOCABULARY_FORMAT, "ids": self._table[1:].tolist()}
    pathlib.Path(path).write_text(json.dumps(payload))

  @classmethod
  def load(cls, path: str | os.PathLike) -> ItemVocabulary:
    """Reads a file `save` wrote; a malformed one is a `DataFormatError` naming the file."""
    where = os.fspath(path)
    try:
      payload = json.loads(pathlib.Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise DataFormatError(where, None, None, f"not an item vocabulary: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != VOCABULARY_FORMAT:
      raise DataFormatError(
        where, None, "format", f"not an item vocabulary: expected format {VOCABULARY_FORMAT!r}"
      )
    ids = payload.get("ids")
    # JSON's true/false load as bool, an int subclass: exact types keep them out.
    integers = isinstance(ids, list) and all(type(i) is int for i in ids)
    if not integers and not (isinstance(ids, list) and all(type(i) is str for i in ids)):
      raise DataFormatError(where, None, "ids", "expected a list of all integers or all strings")
    try:
      return cls(np.asarray(ids, np.int64) if integers else np.asarray(ids, str))
    except (ValueError, OverflowError) as error:
      raise DataFormatError(where, None, "ids", str(error)) from None


class IdentityVocabulary(ItemVocabulary):
  """Ids 1..N as themselves, with no per-item array: a synthetic catalogue of 10^8 items would
  otherwise hold four of them (3.2 GB)."""

  def __init__(self, num_items: int):
    """The vocabulary of ids 1..`num_items`."""
    self._num_items = int(num_items)

  @property
  def _table(self) -> np.ndarray:  # the base class's view, built only where it must be whole
    return np.arange(self._num_items + 1, dtype=np.int64)

  @property
  def is_integer(self) -> bool:
    """Always: the ids are the integers 1..N."""
    return True

  def __len__(self) -> int:
    """N, the number of items (padding excluded)."""
    return self._num_items

  def _internal(self, query: np.ndarray) -> np.ndarray:
    """An id in 1..N is itself, anything else 0."""
    known = (query >= 1) & (query <= self._num_items)
    return np.where(known, query, 0).astype(np.int32)

  def _original(self, internal: np.ndarray) -> np.ndarray:
    """Internal ids are the original ones."""
    return internal.astype(np.int64)
