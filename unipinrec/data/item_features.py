"""Per-item features aligned to internal item ids: what the item encoder reads.

Row i holds internal item id i's features; row 0 (padding) is zeros. The arrays come from
feature files (`item_feature_files.py`), the MovieLens item table, or the synthetic world's
noisy content vectors, and the model keeps them as frozen tables (`model/item_encoder.py`).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
  """One categorical side feature; single-valued (K = 1, e.g. year bucket) or multi (genres)."""

  name: str
  values: np.ndarray  # [N + 1, K] int32 value ids 1..V, 0 = no value (padding, or missing)
  vocabulary: tuple[str, ...]  # the V value names: value id v spells vocabulary[v - 1]
  multi_valued: bool = False  # read as several values per item ("|"-separated in CSV)

  @property
  def num_values(self) -> int:
    """Rows of the feature's embedding table: V values and the "no value" row 0."""
    return len(self.vocabulary) + 1

  @property
  def width(self) -> int:
    """K, the values an item can hold (1: single-valued)."""
    return self.values.shape[1]


@dataclasses.dataclass(frozen=True)
class NumericColumn:
  """One numeric side feature and the statistics it was standardised with."""

  name: str
  mean: float
  std: float  # 1.0 for a constant column, which then reads 0 everywhere

  def standardise(self, values: np.ndarray) -> np.ndarray:
    """`values` as the model reads this column: (value - mean) / std."""
    return (np.asarray(values, np.float64) - self.mean) / self.std


@dataclasses.dataclass(frozen=True)
class FeatureShapes:
  """The model's view of the features: what sizes its encoder's tables and inputs take."""

  content_dim: int = 0  # C, width of the dense content vectors (0: none)
  categorical: tuple[tuple[int, int], ...] = ()  # (rows V + 1, width K) per categorical feature
  numeric_dim: int = 0  # F, numeric features per item

  @property
  def any(self) -> bool:
    """Whether an item has any feature at all."""
    return bool(self.content_dim or self.categorical or self.numeric_dim)


@dataclasses.dataclass(frozen=True)
class ItemFeatures:
  """Every item's features, row i for internal item id i (row 0, padding: zeros)."""

  content: np.ndarray  # [N + 1, C] float32 dense content vectors; C = 0 without any
  categorical: tuple[CategoricalFeature, ...]
  numeric: np.ndarray  # [N + 1, F] float32, standardised over the items that have them
  # [N + 1] bool: the item had a row in some feature source. Items without one keep zeros
  # (and value 0) everywhere, so the encoder sees "no features", never a made-up value.
  has_features: np.ndarray
  numeric_columns: tuple[NumericColumn, ...] = ()  # what each numeric column is, in order

  def __post_init__(self):
    if len(self.numeric_columns) != self.numeric.shape[-1]:
      raise ValueError(
        f"item features: {self.numeric.shape[-1]} numeric columns, "
        f"{len(self.numeric_columns)} described"
      )
    rows = len(self.has_features)
    arrays = {"content": self.content, "numeric": self.numeric}
    arrays.update({f"categorical {f.name!r}": f.values for f in self.categorical})
    for name, array in arrays.items():
      if array.ndim != 2 or len(array) != rows:
        raise ValueError(f"item features: {name} has shape {array.shape}, expected [{rows}, ...]")

  @property
  def num_items(self) -> int:
    """N, the catalogue the features cover (rows less the padding row)."""
    return len(self.has_features) - 1

  @property
  def shapes(self) -> FeatureShapes:
    """The sizes the model's encoder is built for."""
    return FeatureShapes(
      content_dim=self.content.shape[1],
      categorical=tuple((f.num_values, f.width) for f in self.categorical),
      numeric_dim=self.numeric.shape[1],
    )

  def tables(self) -> dict[str, np.ndarray]:
    """The arrays the model stores, by the names of its frozen tables."""
    tables = {
      "content": self.content.astype(np.float32),
      "numeric": self.numeric.astype(np.float32),
    }
    for i, feature in enumerate(self.categorical):
      tables[f"categorical_{i}"] = feature.values.astype(np.int32)
    return tables
