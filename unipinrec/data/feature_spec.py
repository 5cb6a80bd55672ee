"""A trained model's item features, so that items added later are read as training read them.

A serving bundle carries a `FeatureSpec` (`features.json`): the content width, each categorical
column's kind, vocabulary and width, and each numeric column's mean and std. `read_new_items`
reads feature files (`item_feature_files`' layouts, and its errors naming file, line and field)
for the ids a vocabulary lacks, with those vocabularies and statistics rather than the files'
own:
- a categorical value the training data never held maps to value id 0, the "no value" row that
  training gives a missing value; an item keeps its K lowest value ids (K: the trained width);
- a numeric value is standardised with the training mean and std; a missing one is 0 (the mean);
- an item without a row in one of the sources keeps zeros there, as in training.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from unipinrec.data.content_vectors import ContentVectors, parse_item_ids, read_content_vectors
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.item_feature_files import (
  numeric_values,
  read_side_table,
  value_ids,
  value_lists,
)
from unipinrec.data.item_features import CategoricalFeature, ItemFeatures, NumericColumn
from unipinrec.data.tables import PathLike, Table
from unipinrec.data.vocabulary import ItemVocabulary


@dataclasses.dataclass(frozen=True)
class CategoricalColumn:
  """A categorical side column as the model was trained on it."""

  name: str
  multi_valued: bool
  vocabulary: tuple[str, ...]  # value id v spells vocabulary[v - 1]
  width: int  # K, value ids per item


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """The item features a model reads, with the vocabularies and statistics of its training."""

  content_dim: int
  categorical: tuple[CategoricalColumn, ...]
  numeric: tuple[NumericColumn, ...]

  @classmethod
  def of(cls, features: ItemFeatures) -> FeatureSpec:
    """The spec of the features a model was trained on."""
    return cls(
      content_dim=features.content.shape[1],
      categorical=tuple(
        CategoricalColumn(f.name, f.multi_valued, f.vocabulary, f.width)
        for f in features.categorical
      ),
      numeric=features.numeric_columns,
    )

  @property
  def side_columns(self) -> list[str]:
    """The side table's columns the model reads."""
    return [c.name for c in self.categorical] + [c.name for c in self.numeric]

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str) -> FeatureSpec:
    values = json.loads(text)
    return cls(
      content_dim=values["content_dim"],
      categorical=tuple(
        CategoricalColumn(**{**c, "vocabulary": tuple(c["vocabulary"])})
        for c in values["categorical"]
      ),
      numeric=tuple(NumericColumn(**c) for c in values["numeric"]),
    )


def _new_rows(ids: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The positions in `ids` of ids in sorted `new`, and those ids' rows 1.. among `new`."""
  keep = np.flatnonzero(np.isin(ids, new))
  return keep, np.searchsorted(new, ids[keep]) + 1


def _content(
  spec: FeatureSpec, content: ContentVectors, new: np.ndarray, num_rows: int
) -> np.ndarray:
  if not spec.content_dim:
    raise DataFormatError(content.path, None, None, "the model reads no content vectors")
  if content.vectors.shape[1] != spec.content_dim:
    raise DataFormatError(
      content.path,
      None,
      None,
      f"vectors of width {content.vectors.shape[1]}; the model reads {spec.content_dim}",
    )
  table = np.zeros((num_rows, spec.content_dim), np.float32)
  keep, rows = _new_rows(content.ids, new)
  table[rows] = content.vectors[keep]
  return table


def _side(
  spec: FeatureSpec, side: Table, side_ids: np.ndarray, new: np.ndarray, num_rows: int
) -> tuple[tuple[CategoricalFeature, ...], np.ndarray]:
  """The new items' categorical features and [num_rows, F] standardised numeric features."""
  keep, rows = _new_rows(side_ids, new)
  categorical = []
  for column in spec.categorical:
    values = np.zeros((num_rows, column.width), np.int32)
    per_row = value_lists(side, column.name, column.multi_valued)
    values[rows] = value_ids([per_row[k] for k in keep], column.vocabulary, column.width)
    categorical.append(
      CategoricalFeature(column.name, values, column.vocabulary, column.multi_valued)
    )
  numeric = np.zeros((num_rows, len(spec.numeric)), np.float32)
  for f, column in enumerate(spec.numeric):
    present, values = numeric_values(side, column.name)
    numeric[rows, f] = np.where(present, column.standardise(values), 0.0)[keep]
  return tuple(categorical), numeric


def read_new_items(
  spec: FeatureSpec,
  vocabulary: ItemVocabulary,
  content_path: PathLike = "",
  side_path: PathLike = "",
) -> tuple[np.ndarray, ItemFeatures]:
  """The items of feature files that `vocabulary` lacks, read as `spec`'s model reads them.

  Args:
    spec: the trained model's features.
    vocabulary: the items the model has; rows of these ids are skipped.
    content_path, side_path: the files ("" for none), in `item_feature_files`' layouts.

  Returns:
    The M new ids in ascending order, and their features: row m for the m-th (row 0 padding).

  Raises:
    DataFormatError: a bad row, or a file of features the model does not read.
  """
  content = side = side_ids = None
  if os.fspath(content_path):
    content = read_content_vectors(content_path, vocabulary.is_integer)
  if os.fspath(side_path):
    if not spec.side_columns:
      raise DataFormatError(os.fspath(side_path), None, None, "the model reads no side features")
    side = read_side_table(side_path, spec.side_columns)
    id_field = side.names[0]
    side_ids = parse_item_ids(
      side.path, side.column(id_field), side.lines, id_field, vocabulary.is_integer
    )
  ids = [found for found in (content.ids if content else None, side_ids) if found is not None]
  if not ids:
    raise ValueError("new items need content vectors, a side feature table or both")
  everything = np.concatenate(ids)
  new = np.unique(everything[vocabulary.to_internal(everything) == 0])
  num_rows = len(new) + 1
  has_features = np.arange(num_rows) > 0
  content_table = np.zeros((num_rows, spec.content_dim), np.float32)
  if content is not None:
    content_table = _content(spec, content, new, num_rows)
  categorical = tuple(
    CategoricalFeature(
      c.name, np.zeros((num_rows, c.width), np.int32), c.vocabulary, c.multi_valued
    )
    for c in spec.categorical
  )
  numeric = np.zeros((num_rows, len(spec.numeric)), np.float32)
  if side is not None:
    categorical, numeric = _side(spec, side, side_ids, new, num_rows)
  features = ItemFeatures(content_table, categorical, numeric, has_features, spec.numeric)
  return new, features
