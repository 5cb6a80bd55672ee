"""A run's configuration as frozen dataclasses, converted once from an ml_collections ConfigDict."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from unipinrec.checkpoint import CheckpointConfig
from unipinrec.data.dataset import DataConfig
from unipinrec.data.synthetic import SyntheticConfig
from unipinrec.errors import ConfigError
from unipinrec.evaluation.generation import GenerationConfig
from unipinrec.index.manifest import IndexConfig
from unipinrec.losses import LossConfig
from unipinrec.model.config import check_attention
from unipinrec.serving.config import ServingConfig
from unipinrec.sharding import MeshConfig
from unipinrec.train.item_init import ItemInitConfig
from unipinrec.train.state import OptimizerConfig
from unipinrec.train.step import StepConfig


@dataclasses.dataclass(frozen=True)
class ModelSizes:
  """The model fields a config sets; catalogue and outcome counts come from the data."""

  max_length: int = 64
  embed_dim: int = 64
  action_dim: int = 16
  num_layers: int = 2
  num_heads: int = 2
  mlp_dim: int = 256
  head_hidden_dim: int = 128
  temperature: float = 0.05
  dropout_rate: float = 0.0
  dtype: str = "float32"
  offsets_seconds: tuple[float, ...] = (0.0,)  # multi-token generation (see ModelConfig)
  kernel: str = "xla"  # "xla" or "pallas" (kernels/candidate_attention.py)
  item_table_multiple: int = 1024
  relative_position_buckets: int = 0  # recency bias on attention (see ModelConfig); 0: off
  time_bias_buckets: int = 0  # time bias on attention (see ModelConfig); 0: off
  exclusive_outcomes: bool = False  # one softmax over (none, outcomes) (see ModelConfig)
  item_bias: bool = False  # a learned retrieval logit bias per item (see ModelConfig)

  def __post_init__(self):
    # At config time, before any data is prepared.
    check_attention(self.kernel, self.relative_position_buckets, self.time_bias_buckets)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run reads."""

  seed: int = 0
  batch_size: int = 64  # global batch, split over the `data` and `fsdp` mesh axes
  num_steps: int = 3000
  log_every: int = 100
  eval_every: int = 0  # steps between validations (public data); 0 never validates
  patience: int = 0  # validations without improvement before stopping; 0 never stops
  eval_batch_size: int = 256
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelSizes = dataclasses.field(default_factory=ModelSizes)
  step: StepConfig = dataclasses.field(default_factory=StepConfig)
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
  item_init: ItemInitConfig = dataclasses.field(default_factory=ItemInitConfig)
  checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
  generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)
  index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
  serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)


def _build(cls, values: Mapping, path: str):
  """Instantiates dataclass `cls` from a nested mapping; `ConfigError` names a bad field's path."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ConfigError(f"unknown config field(s) {', '.join('config.' + path + k for k in unknown)}")
  kwargs = {}
  for name, value in values.items():
    nested = _NESTED.get((cls, name))
    kwargs[name] = _build(nested, value, f"{path}{name}.") if nested else value
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as error:  # a dataclass's validation of its fields
    raise ConfigError(f"{('config.' + path).rstrip('.')}: {error}") from error


_NESTED = {
  (RunConfig, "mesh"): MeshConfig,
  (RunConfig, "data"): DataConfig,
  (RunConfig, "model"): ModelSizes,
  (RunConfig, "step"): StepConfig,
  (RunConfig, "optimizer"): OptimizerConfig,
  (RunConfig, "item_init"): ItemInitConfig,
  (RunConfig, "checkpoint"): CheckpointConfig,
  (RunConfig, "generation"): GenerationConfig,
  (RunConfig, "index"): IndexConfig,
  (RunConfig, "serving"): ServingConfig,
  (DataConfig, "synthetic"): SyntheticConfig,
  (StepConfig, "loss"): LossConfig,
}


def _upgrade_renamed(values: Mapping) -> Mapping:
  """The mapping with fields renamed since a work directory's config.json was written.

  `step.loss.offset_logq_correction` (on/off, before df49749) is the share
  `step.loss.offset_logq_strength`: on is 1, off is 0.
  """
  loss = dict(values.get("step", {}).get("loss", {}))
  if "offset_logq_correction" not in loss:
    return values
  loss["offset_logq_strength"] = 1.0 if loss.pop("offset_logq_correction") else 0.0
  return {**values, "step": {**values["step"], "loss": loss}}


def from_mapping(values: Mapping) -> RunConfig:
  """A `RunConfig` from a nested dict: `ConfigDict.to_dict()` or a work directory's config.json."""
  return _build(RunConfig, _upgrade_renamed(values), "")


def to_dict(config: RunConfig) -> dict:
  """The full configuration as plain JSON-ready values."""
  return dataclasses.asdict(config)
