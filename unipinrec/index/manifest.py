"""What an index was built from, written beside it and checked before it serves a model."""

from __future__ import annotations

import dataclasses
import json

from unipinrec.errors import UserInputError


class IndexMismatchError(UserInputError, ValueError):
  """The index was built from another model (step, configuration, catalogue or width)."""


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """usearch HNSW settings; the metric is always inner product (the model's score)."""

  dtype: str = "f16"  # storage of the vectors in the graph: f32, f16 or i8
  connectivity: int = 16  # HNSW "M": graph edges per node and layer
  expansion_add: int = 128  # "efConstruction": search depth while inserting
  expansion_search: int = 256  # "ef": search depth per query (may be changed after loading)
  exact: bool = False  # search exhaustively (brute force) instead of walking the graph

  def __post_init__(self):
    if self.dtype not in ("f32", "f16", "i8"):
      raise ValueError(f"index dtype must be f32, f16 or i8, not {self.dtype!r}")


@dataclasses.dataclass(frozen=True)
class Manifest:
  """Identity of the model an index belongs to, and how the index was built.

  `step`, `config_hash`, `num_items` and `embed_dim` are compared with the
  serving model's; any difference refuses the index (`check`).
  """

  step: int  # training step of the parameters the item vectors come from
  config_hash: str  # `export.checkpoint.config_hash` of the run's configuration
  num_items: int  # N: keys are item ids 1..N
  embed_dim: int  # width of the indexed vectors: D, or D + 1 with the item bias (score_dim)
  outcome_names: tuple[str, ...]
  index: IndexConfig

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str) -> Manifest:
    values = json.loads(text)
    values["outcome_names"] = tuple(values["outcome_names"])
    values["index"] = IndexConfig(**values["index"])
    return cls(**values)

  def identity(self) -> dict:
    """The fields an index must share with the model it serves."""
    return {
      "step": self.step,
      "config_hash": self.config_hash,
      "num_items": self.num_items,
      "embed_dim": self.embed_dim,
    }


def check(found: Manifest, expected: Manifest, where: str) -> None:
  """Raises `IndexMismatchError` naming every identity field where `found` differs."""
  expected_identity = expected.identity()
  differences = [
    f"{name}: index has {value!r}, model has {expected_identity[name]!r}"
    for name, value in found.identity().items()
    if value != expected_identity[name]
  ]
  if differences:
    raise IndexMismatchError(
      f"the index at {where} was not built from this model ({'; '.join(differences)}); "
      "rebuild it from the checkpoint (experiments.recommend does when --rebuild_index)"
    )
