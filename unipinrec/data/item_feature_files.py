"""Per-item feature files, keyed by the data set's own item ids, as `ItemFeatures` on internal ids.

Two sources, either or both:

Content vectors (`content_path`): one dense vector per item, every vector of one width C.
  .npy      a 2-D numeric array: column 1 is the item id (a whole number, so integer ids only),
            columns 2.. the vector. Messages call row r (1-based) line r.
  .parquet  the first column is the item id, the second a list of numbers (the vector); other
            columns are ignored. Rows are numbered from 1.
  other     CSV: the id, then the vector's numbers, comma-separated. A header line is optional:
            the first line is a header when none of its fields after the first is a number
            (so a header cannot name vector columns by numbers).
Side features (`side_path`): a CSV file with a header line, or a .parquet file, whose first
  column is the item id, holding the columns the caller names (other columns are ignored):
  categorical: one value per item ("" or null: none).
  multi-valued: values separated by "|" in CSV, a list in Parquet; blanks skipped, repeats kept
    once ("" or null: none).
  numeric: a finite number ("" or null: missing).
  `movielens.movielens_side_table` gives a MovieLens folder's films as such a table: "genres"
  (multi-valued) and "year" (categorical, the release year's 5-year bucket).

How the rows meet the logs' `ItemVocabulary`:
- A logged item without a row in a source keeps zeros there (value id 0, numeric 0), and
  `has_features` is True only for items with a row in some source.
- Ids the vocabulary lacks are feature-only (cold) items: they are appended to the vocabulary
  as internal ids N+1.. in ascending order of their ids, and flagged in the returned mask.
- A categorical column's vocabulary is its distinct values sorted; value id v spells the v-th.
- A multi-valued column is K = the most values any item holds wide; an item's value ids are
  ascending, padded with 0.
- A numeric column is standardised over the items that have a value (mean 0, population std 1;
  a constant column becomes 0); a missing value is 0, the mean.
Bad input is a `DataFormatError` naming the file, the line and the field: a row of another
width, a value that is not a finite number, a repeated id, a column the caller names that the
file lacks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from unipinrec.data.content_vectors import ContentVectors, parse_item_ids, read_content_vectors
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.item_features import CategoricalFeature, ItemFeatures, NumericColumn
from unipinrec.data.tables import (
  PathLike,
  Table,
  csv_table,
  existing_file,
  parquet_table,
  parse_finite_float,
)
from unipinrec.data.vocabulary import ItemVocabulary

MULTI_VALUE_SEPARATOR = "|"


def read_side_table(path: PathLike, columns: Sequence[str]) -> Table:
  """A side-feature table: its first column (the id) and `columns`, from CSV or .parquet."""
  file = existing_file(path, "a side feature table (CSV with a header line, or .parquet)")
  if file.suffix == ".parquet":
    import pyarrow.parquet as pq  # a dependency; imported here as only Parquet needs it

    try:
      first = pq.read_schema(file).names[:1]
    except Exception as error:  # pyarrow's errors for a file that is not Parquet vary
      raise DataFormatError(str(file), None, None, f"unreadable Parquet: {error}") from error
    return parquet_table(file, [*first, *(c for c in columns if c not in first)])
  table = csv_table(file)
  for column in columns:
    table.column(column)  # a missing column is an error at the header
  return table


def _blank(value: Any) -> bool:
  return value is None or (isinstance(value, str) and not value.strip())


def value_lists(table: Table, name: str, multi: bool) -> list[list[str]]:
  """A categorical column's values of each row (none for a blank)."""
  per_row: list[list[str]] = []
  for value, line in zip(table.column(name), table.lines, strict=True):
    if _blank(value):
      per_row.append([])
    elif isinstance(value, (list, tuple, np.ndarray)):
      if not multi:
        raise DataFormatError(table.path, line, name, f"expected one value, got a list {value!r}")
      per_row.append([str(v).strip() for v in value if not _blank(v)])
    elif multi and isinstance(value, str):
      per_row.append([v.strip() for v in value.split(MULTI_VALUE_SEPARATOR) if v.strip()])
    else:
      per_row.append([str(value).strip()])
  return per_row


def value_ids(
  per_row: Sequence[Sequence[str]], vocabulary: Sequence[str], width: int
) -> np.ndarray:
  """[R, width] int32 ascending value ids of each row's values, padded with 0.

  A value `vocabulary` lacks is dropped (id 0, "no value"), and a row keeps its `width` lowest
  ids: what a model trained on `vocabulary` and that width can read.
  """
  index = {v: i + 1 for i, v in enumerate(vocabulary)}
  ids = np.zeros((len(per_row), width), np.int32)
  for row, values in enumerate(per_row):
    known = sorted({index[v] for v in values if v in index})[:width]
    ids[row, : len(known)] = known
  return ids


def _categorical(
  table: Table, name: str, rows: np.ndarray, num_rows: int, multi: bool
) -> CategoricalFeature:
  """A categorical column on internal ids `rows` (one per table row)."""
  per_row = value_lists(table, name, multi)
  vocabulary = tuple(sorted({v for values in per_row for v in values}))
  width = max(1, max((len(set(values)) for values in per_row), default=0))
  values = np.zeros((num_rows, width), np.int32)
  values[rows] = value_ids(per_row, vocabulary, width)
  return CategoricalFeature(name=name, values=values, vocabulary=vocabulary, multi_valued=multi)


def numeric_values(table: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
  """A numeric column: [R] bool whether each row has a value, and [R] float64 values (0 if not)."""
  present, numbers = [], []
  for value, line in zip(table.column(name), table.lines, strict=True):
    present.append(not _blank(value))
    if present[-1]:
      try:
        numbers.append(parse_finite_float(value))
      except (ValueError, TypeError):
        raise DataFormatError(
          table.path, line, name, f"expected a finite number, got {value!r}"
        ) from None
  mask = np.asarray(present, bool)
  values = np.zeros(len(mask), np.float64)
  values[mask] = numbers
  return mask, values


def _numeric(table: Table, name: str) -> tuple[NumericColumn, np.ndarray]:
  """A numeric column's statistics and [R] its values standardised by them, missing ones 0."""
  present, values = numeric_values(table, name)
  mean, std = (values[present].mean(), values[present].std()) if present.any() else (0.0, 1.0)
  # A constant column carries nothing; dividing by 1 keeps it at 0 rather than NaN.
  column = NumericColumn(name, float(mean), float(std) if std > 0 else 1.0)
  return column, np.where(present, column.standardise(values), 0.0).astype(np.float32)


def _extended(vocabulary: ItemVocabulary, ids: list[np.ndarray]) -> ItemVocabulary:
  """`vocabulary` with the ids it lacks appended in ascending order."""
  everything = np.concatenate(ids)
  cold = np.unique(everything[vocabulary.to_internal(everything) == 0])
  if not len(cold):
    return vocabulary
  known = vocabulary.to_original(np.arange(1, len(vocabulary) + 1))
  return ItemVocabulary(np.concatenate([known, cold]))


def item_features_from(
  vocabulary: ItemVocabulary,
  content: ContentVectors | None = None,
  side: Table | None = None,
  categorical: Sequence[str] = (),
  multi_valued: Sequence[str] = (),
  numeric: Sequence[str] = (),
) -> tuple[ItemVocabulary, ItemFeatures, np.ndarray]:
  """Features of read sources on the logs' internal ids, feature-only ids appended.

  Args:
    vocabulary: the logs' items 1..N.
    content: content vectors (`read_content_vectors`), or None.
    side: a side-feature table whose first column is the item id (`read_side_table`,
      `movielens.movielens_side_table`), or None.
    categorical, multi_valued, numeric: the side table's columns of each kind.

  Returns:
    The vocabulary with feature-only ids appended as N+1.. (ascending), the features of its
    N' items, and [N' + 1] bool: which items are feature-only (cold).
  """
  if content is None and side is None:
    raise ValueError("item features need content vectors, a side feature table or both")
  named = [*categorical, *multi_valued, *numeric]
  repeated = sorted({c for c in named if named.count(c) > 1})
  if repeated:
    raise ValueError(f"side feature columns named twice: {repeated}")
  if named and side is None:
    raise ValueError(f"side feature columns {named} need a side feature table")
  side_ids = None
  if side is not None:
    id_field = side.names[0]
    if id_field in named:
      raise ValueError(f"side feature column {id_field!r} is the table's item id column")
    side_ids = parse_item_ids(
      side.path, side.column(id_field), side.lines, id_field, vocabulary.is_integer
    )
  sources = [s for s in (content.ids if content else None, side_ids) if s is not None]
  extended = _extended(vocabulary, sources)
  num_rows = len(extended) + 1
  has_features = np.zeros(num_rows, bool)
  content_table = np.zeros((num_rows, 0), np.float32)
  if content is not None:
    rows = extended.to_internal(content.ids)
    content_table = np.zeros((num_rows, content.vectors.shape[1]), np.float32)
    content_table[rows] = content.vectors
    has_features[rows] = True
  categories: list[CategoricalFeature] = []
  numeric_table = np.zeros((num_rows, len(numeric)), np.float32)
  numeric_columns: list[NumericColumn] = []
  if side is not None:
    rows = extended.to_internal(side_ids)
    has_features[rows] = True
    for name in categorical:
      categories.append(_categorical(side, name, rows, num_rows, multi=False))
    for name in multi_valued:
      categories.append(_categorical(side, name, rows, num_rows, multi=True))
    for f, name in enumerate(numeric):
      column, numeric_table[rows, f] = _numeric(side, name)
      numeric_columns.append(column)
  features = ItemFeatures(
    content=content_table,
    categorical=tuple(categories),
    numeric=numeric_table,
    has_features=has_features,
    numeric_columns=tuple(numeric_columns),
  )
  cold = np.zeros(num_rows, bool)
  cold[len(vocabulary) + 1 :] = True
  return extended, features, cold


def read_item_features(
  vocabulary: ItemVocabulary,
  content_path: PathLike = "",
  side_path: PathLike = "",
  categorical: Sequence[str] = (),
  multi_valued: Sequence[str] = (),
  numeric: Sequence[str] = (),
) -> tuple[ItemVocabulary, ItemFeatures, np.ndarray]:
  """Reads feature files keyed by the logs' own ids (the module docstring has the layouts).

  `content_path` and `side_path` name the files ("" for none); the rest and the returned
  triple are `item_features_from`'s.
  """
  columns = [*categorical, *multi_valued, *numeric]
  # A Path is always true; its spelling tells "" (none) apart.
  content = None
  if os.fspath(content_path):
    content = read_content_vectors(content_path, vocabulary.is_integer)
  side = read_side_table(side_path, columns) if os.fspath(side_path) else None
  return item_features_from(vocabulary, content, side, categorical, multi_valued, numeric)
