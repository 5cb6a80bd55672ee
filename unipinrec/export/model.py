"""The parameters a server runs, with the identity an index is checked against."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from unipinrec.index.manifest import IndexConfig, Manifest
from unipinrec.model.unified import UniPinRec


@dataclasses.dataclass(frozen=True)
class ServingModel:
  """A model with its parameters, the step they come from and its run's configuration hash."""

  model: UniPinRec
  params: Any
  step: int
  config_hash: str
  outcome_names: tuple[str, ...]

  def item_vectors(self) -> np.ndarray:
    """[N + 1, S] float32 item vectors (row 0 the padding item), as queries score them.

    S is `config.score_dim`: the unit vector, and temperature x bias with the item bias.
    """
    vectors = self.model.apply({"params": self.params}, method=self.model.item_vectors)
    return np.asarray(vectors, dtype=np.float32)

  def manifest(self, index: IndexConfig) -> Manifest:
    """The manifest of an index of this model's items, built with `index`'s settings."""
    config = self.model.config
    return Manifest(
      step=self.step,
      config_hash=self.config_hash,
      num_items=config.num_items,
      embed_dim=config.score_dim,
      outcome_names=self.outcome_names,
      index=index,
    )
