"""A run's configuration as frozen dataclasses, converted once from an ml_collections ConfigDict.

Every setting is defined once, in the dataclass of the stage that reads it, and its default is
the synthetic default's value: `experiments/configs/synthetic.py` is these defaults, and the
other configs state only what differs. The blocks of the stages below training (data, model,
losses, index, mesh, checkpoints) live beside their code; those of training, generation and
serving live here, so that this module imports only downwards.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from unipinrec.checkpoint import CheckpointConfig
from unipinrec.data.dataset import DataConfig
from unipinrec.data.synthetic import SyntheticConfig
from unipinrec.errors import ConfigError
from unipinrec.index.manifest import IndexConfig
from unipinrec.losses import LossConfig
from unipinrec.model.config import ModelConfig
from unipinrec.sharding import MeshConfig

ITEM_INIT_METHODS = ("random", "cooccurrence")
SCHEDULES = ("cosine", "wsd")


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What the step samples: MAM masking and the loss configuration."""

  mask_prob: float = 0.2  # share of past actions replaced by [MASK]
  loss: LossConfig = dataclasses.field(default_factory=LossConfig)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Adam(W) with linear warm-up, a decay schedule and global-norm clipping.

  The item table has its own, larger learning rate: each row is updated only
  when its item is in the batch, while dense weights move every step. With one
  rate for both, the dense layers learn a query that ignores the item (one
  direction for every user, the popularity optimum) before the rows organise.
  """

  learning_rate: float = 2e-3  # dense weights: a higher rate lost retrieval, a lower ranking
  embedding_learning_rate: float = 1e-2  # the item table and the attention-bias tables
  warmup_steps: int = 100
  # "cosine": from the warm-up's end to num_steps. "wsd" (warm-up, stable, decay): the peak
  # holds until `patience` is spent (or the budget nears its end), then a cosine over
  # `decay_fraction` of the steps trained so far, and training stops (unipinrec/train/schedule.py).
  schedule: str = "cosine"
  decay_fraction: float = 0.3
  final_learning_rate_fraction: float = 0.05
  weight_decay: float = 1e-4
  clip_norm: float = 1.0
  # Evaluation reads an exponential moving average of the parameters with this
  # decay (debiased, so its start does not matter); 0 evaluates the last step's.
  ema_decay: float = 0.0

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"optimizer.schedule={self.schedule!r}; expected one of {SCHEDULES}")
    if self.decay_fraction <= 0:
      raise ValueError(f"optimizer.decay_fraction={self.decay_fraction}; expected above 0")


@dataclasses.dataclass(frozen=True)
class ItemInitConfig:
  """How the item table starts; "random" is the model's own normal(0.1) draw."""

  # "random", or "cooccurrence": rows from the training logs' item co-occurrence, which skips
  # the plateau a random table spends its first hundreds of steps on.
  method: str = "cooccurrence"
  window: int = 20  # actions apart (either way) that still count as co-occurring: a few sessions
  stddev: float = 0.1  # per-coordinate scale of the rows, as the random draw's
  seed: int = 0  # the SVD's start vector and the rows of never-seen items

  def __post_init__(self):
    if self.method not in ITEM_INIT_METHODS:
      raise ValueError(f"item_init.method={self.method!r}; expected one of {ITEM_INIT_METHODS}")
    if self.window < 1:
      raise ValueError(f"item_init.window={self.window}; expected at least 1")


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  """What `experiments.evaluate_generation` measures (budgets and multi-token generation)."""

  k: int = 10  # items per generated vector: unordered recall@k
  vectors: tuple[int, ...] = (1, 2, 4)  # query vectors per user compared
  horizon_seconds: float = 345_600.0  # synthetic: the last 4 days of a user are the future
  budget_k: int = 20  # list length of the budget sweep
  budget_points: int = 5  # budgets from all-click to all-save
  timing_repeats: int = 5  # timed passes over the users; the median is reported


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How the full-catalogue retrieval metrics are computed: memory and speed, not the figures
  (except with `ann`, whose figures are those of the approximate search)."""

  user_chunk: int = 2048  # users ranked together
  # Items scored at once: a block holds user_chunk x item_chunk scores (float32: 128 MiB).
  item_chunk: int = 16384
  # Rank by a usearch index of the item vectors (the `index` block's settings) instead of
  # scoring every item: for catalogues where exact scoring is too slow. The report then
  # gains "ann": recall@10 and @100 of the index's top items against the exact ones.
  ann: bool = False
  ann_recall_users: int = 1000  # users whose exact top items the index's are compared with
  # The model's item vectors larger than this are never held: each chunk of items is encoded
  # inside the scoring loop, so a catalogue of 10^8 items costs one chunk's memory.
  stored_item_vectors_mib: int = 1024

  def __post_init__(self):
    for name in ("user_chunk", "item_chunk", "ann_recall_users"):
      if getattr(self, name) < 1:
        raise ValueError(f"eval.{name}={getattr(self, name)}; expected at least 1")
    if self.stored_item_vectors_mib < 0:
      raise ValueError(
        f"eval.stored_item_vectors_mib={self.stored_item_vectors_mib}; expected at least 0"
      )


@dataclasses.dataclass(frozen=True)
class ServingConfig:
  """How many items are retrieved, ranked and returned, and how users are batched."""

  num_candidates: int = 256  # K: items retrieved from the index and ranked per user
  num_results: int = 20  # ranked items returned per user
  batch_size: int = 32  # users per compiled call; the last batch is padded to it
  # Budgets and generation: outcome (and offset) queries this close share one search.
  merge_cosine: float = 0.98
  view: bool = True  # memory-map the index files instead of reading them into memory

  def candidates_for(self, num_items: int) -> int:
    """K for a catalogue of `num_items`: never more candidates than items."""
    return min(self.num_candidates, num_items)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run reads."""

  seed: int = 0
  batch_size: int = 64  # global batch, split over the `data` and `fsdp` mesh axes
  # The optimizer's cosine decays over these steps, so a longer run is a different schedule.
  num_steps: int = 1400
  # > 0: the run's length in passes over the training examples instead, so that a larger log
  # trains longer; `for_data` turns it into num_steps once the data is read.
  num_epochs: float = 0.0
  # > 0: one launch trains at most this long, then saves and evaluates (a resumed launch
  # gets the same again); early stopping (`patience`) usually ends a run before.
  max_train_minutes: float = 0.0
  log_every: int = 100
  eval_every: int = 0  # steps between validations (public data); 0 never validates
  patience: int = 0  # validations without improvement before stopping; 0 never stops
  eval_batch_size: int = 256
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  step: StepConfig = dataclasses.field(default_factory=StepConfig)
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
  item_init: ItemInitConfig = dataclasses.field(default_factory=ItemInitConfig)
  checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
  generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)
  index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
  serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)

  def __post_init__(self):
    default = ModelConfig()
    for name in ("num_items", "num_outcomes", "num_surfaces"):
      if getattr(self.model, name) != getattr(default, name):
        raise ValueError(f"model.{name} is the data's: a run config leaves it unset")
    if self.num_epochs < 0 or self.max_train_minutes < 0:
      raise ValueError(
        f"num_epochs={self.num_epochs} and max_train_minutes={self.max_train_minutes}: "
        "expected 0 (off) or a positive number"
      )
    if self.model.repeat_buckets and self.step.loss.kernel != "xla":
      raise ValueError(
        "model.repeat_buckets needs step.loss.kernel='xla': the Pallas kernel takes no "
        f"per-anchor logit bias (got kernel={self.step.loss.kernel!r})"
      )
    if self.eval.ann and self.model.repeat_buckets:
      raise ValueError("eval.ann needs model.repeat_buckets=0: an index holds no history bias")


def _build(cls, values: Mapping, path: str):
  """Instantiates dataclass `cls` from a nested mapping, naming any unknown or bad field."""
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
    if isinstance(error, ConfigError):
      raise
    raise ConfigError(f"{('config.' + path).rstrip('.')}: {error}") from error


_NESTED = {
  (RunConfig, "mesh"): MeshConfig,
  (RunConfig, "eval"): EvalConfig,
  (RunConfig, "data"): DataConfig,
  (RunConfig, "model"): ModelConfig,
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


def for_data(run: RunConfig, num_examples: int, num_items: int) -> RunConfig:
  """`run` with what follows the data resolved: num_steps from `num_epochs` (when set) over
  `num_examples` training examples, and the softmax "auto" for `num_items` items."""
  num_steps = run.num_steps
  if run.num_epochs:
    num_steps = max(1, math.ceil(run.num_epochs * num_examples / run.batch_size))
  step = dataclasses.replace(run.step, loss=run.step.loss.for_catalogue(num_items))
  return dataclasses.replace(run, num_steps=num_steps, step=step)


def from_mapping(values: Mapping) -> RunConfig:
  """A `RunConfig` from a nested dict: `ConfigDict.to_dict()` or a work directory's config.json.

  Raises:
    ConfigError: naming the field that is unknown (a config.json of an older version names
      the renamed field here) or whose value a dataclass refuses.
  """
  return _build(RunConfig, values, "")


def to_dict(config: RunConfig) -> dict:
  """The full configuration as plain JSON-ready values."""
  return dataclasses.asdict(config)
