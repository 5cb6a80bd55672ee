"""One call from a data configuration to everything training and evaluation read.

Two sources: the synthetic world (users held out whole, with the ground
truth beside them) and a public log read from a path (every user trains on
all but its last two interactions, PROTOCOL.md's leave-last-out).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from unipinrec.data import count_min, movielens, protocol, synthetic_items, tfds_builders
from unipinrec.data import examples as examples_lib
from unipinrec.data.content_vectors import read_content_vectors
from unipinrec.data.generated_items import ItemGenerator
from unipinrec.data.item_feature_files import item_features_from, read_item_features
from unipinrec.data.item_features import ItemFeatures
from unipinrec.data.repeats import Repeats, last_action_shares, repeat_shares
from unipinrec.data.sequences import (
  MIN_TEST_LENGTH,
  UserSequences,
  data_card,
  leave_last_out,
  target_repeats,
  to_user_logs,
)
from unipinrec.data.synthetic import SyntheticConfig, SyntheticWorld, generate_world
from unipinrec.data.synthetic_at_scale import generate_world_at_scale
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.errors import ConfigError, MissingPathError
from unipinrec.types import UserLogs

LOGQ_SOURCES = ("exact", "count_min")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the logs come from and how examples are cut from them."""

  source: str = "synthetic"  # "synthetic", or a reader format: auto, movielens, sasrec, actions
  path: str = ""  # the data set's folder or file, for a reader format
  columns: dict = dataclasses.field(default_factory=dict)  # the "actions" format's column mapping
  tfds_dir: str = ""  # where prepared data sets go; "" = $TFDS_DATA_DIR, else ~/tensorflow_datasets
  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
  # Synthetic: users kept out of training and evaluated instead; a third of the default world
  # keeps HR@10's standard error well under the model's lead over popularity.
  holdout_fraction: float = 1 / 3
  max_slates: int = 16  # slates per blended example
  # Actions between training windows' ends (0: max_length, no overlap). Overlapping windows
  # show each slate with several history prefixes and keep slates one window's choice drops.
  window_stride: int = 16
  eval_slates_per_user: int = 5  # synthetic: a held-out user's last slates ranked
  sampled_slates_per_user: int = 16  # public logs: training slates built per user
  sampled_slate_size: int = 10  # public logs: one real action among never-seen items
  ranking_slates: bool = False  # public logs: PROTOCOL.md's ranking slates (rated data)
  # The unfiltered figure is primary from this share of validation targets that repeat a history
  # item: at a fifth, the filtered rule's leak (the target alone among them) can reorder models.
  repeat_threshold: float = 0.2
  # Where the train step's log-Q reads item shares from: "exact" counts of the training
  # actions, or "count_min", a sketch of them (PinRec's: a catalogue of billions leaves no room
  # for a count table). Evaluation's popularity baseline reads the exact counts either way.
  logq_source: str = "exact"
  # count_min: counters per hash row; an estimate is over by at most e / width of the actions.
  count_min_width: int = 1 << 18
  count_min_depth: int = 5  # count_min: hash rows; an item breaks that bound w.p. at most e^-depth
  # Public logs: item features keyed by the data set's own item ids, in the layouts of
  # unipinrec/data/item_feature_files.py; ids the logs lack become feature-only (cold) items.
  item_content_path: str = ""  # dense content vectors: .npy, .parquet or CSV ("": none)
  item_side_path: str = ""  # side features: CSV with a header line, or .parquet ("": none)
  # The side table's columns by kind, e.g. --config.data.item_numeric="('price',)".
  item_categorical: tuple[str, ...] = ()  # one value per item
  item_multi_valued: tuple[str, ...] = ()  # several values per item ("|"-separated in CSV)
  item_numeric: tuple[str, ...] = ()  # numbers, standardised over the items that have them
  # MovieLens: the item file's genres (multi-valued) and release-year bucket (categorical) as
  # the side features, in place of item_side_path.
  movielens_side_features: bool = False

  def __post_init__(self):
    if not 0.0 <= self.repeat_threshold <= 1.0:
      raise ValueError(f"data.repeat_threshold={self.repeat_threshold}; expected a share in [0, 1]")
    if self.logq_source not in LOGQ_SOURCES:
      raise ValueError(f"data.logq_source={self.logq_source!r}; expected one of {LOGQ_SOURCES}")
    if not 1 <= self.count_min_width < count_min.PRIME:
      raise ValueError(
        f"data.count_min_width={self.count_min_width}; expected 1 to {count_min.PRIME - 1} "
        "counters per hash row"
      )
    if self.count_min_depth < 1:
      raise ValueError(f"data.count_min_depth={self.count_min_depth}; expected at least 1 hash row")
    self._check_item_features()

  def _check_item_features(self) -> None:
    kinds = ("item_categorical", "item_multi_valued", "item_numeric")
    for kind in kinds:  # a config read back from JSON holds lists; the config stays hashable
      object.__setattr__(self, kind, tuple(str(column) for column in getattr(self, kind)))
    named = [column for kind in kinds for column in getattr(self, kind)]
    uses_features = self.item_content_path or self.item_side_path or self.movielens_side_features
    if uses_features and self.source == "synthetic":
      raise ValueError("data.item_*_path and data.movielens_side_features are for public logs")
    if self.movielens_side_features and self.item_side_path:
      raise ValueError("data.movielens_side_features replaces data.item_side_path; set one")
    if self.item_side_path and not named:
      raise ValueError(
        f"data.item_side_path={self.item_side_path!r} needs the columns to read: "
        "data.item_categorical, data.item_multi_valued or data.item_numeric"
      )
    if named and not self.item_side_path:
      raise ValueError(
        f"data.item_categorical/multi_valued/numeric name {named}; set data.item_side_path"
      )
    repeated = sorted({column for column in named if named.count(column) > 1})
    if repeated:
      raise ValueError(f"data.item_categorical/multi_valued/numeric name {repeated} twice")


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """Logs, blended training examples, held-out examples and item statistics."""

  logs: UserLogs
  item_vocabulary: ItemVocabulary  # item ids 1..N <-> the data's own (synthetic: themselves)
  world: SyntheticWorld | None  # the ground truth, for synthetic data only
  train_examples: dict[str, np.ndarray]
  eval_examples: examples_lib.EvalExamples
  # [N + 1] exact add-one smoothed log shares of the training users' actions: the popularity
  # baseline's scores, and the log-Q source when `logq_source` is "exact".
  item_log_frequency: np.ndarray
  # [N + 1] what the train step's log-Q correction reads: `item_log_frequency` itself, or the
  # count-min sketch's estimate of it (`DataConfig.logq_source`).
  logq_log_frequency: np.ndarray
  repeats: Repeats  # how often targets repeat the history, and the primary figure it chooses
  eval_negatives: np.ndarray | None = None  # [U, 100] sampled-100 items, public logs
  valid_examples: protocol.ProtocolExamples | None = None  # validation targets, public logs
  eval_users: np.ndarray | None = None  # held-out users of the synthetic split
  # Per-item features the item encoder reads (`item_features.py`); None: ids only.
  item_features: ItemFeatures | None = None
  # [N + 1] bool, items held out of training entirely (never in a training history, target or
  # slate): evaluation reports their targets apart. None: every item is warm.
  cold_items: np.ndarray | None = None
  # Synthetic worlds of `items_from_ids`: every item computed from its id; the model computes
  # content the same way where the generator has any (`ItemGenerator.content_dim`).
  item_generator: ItemGenerator | None = None


def prepare_data(config: DataConfig, max_length: int, seed: int) -> PreparedData:
  """Generates (or reads) the logs and cuts them into examples, deterministically."""
  if config.source != "synthetic":
    return _prepare_public(config, max_length, seed)
  num_users = config.synthetic.num_users
  train_users, eval_users = examples_lib.split_users(num_users, config.holdout_fraction, seed)
  # Cold items are shown to the held-out users only, so training never meets them.
  held_out = np.zeros(num_users, dtype=bool)
  held_out[eval_users] = True
  world, generator = None, None
  if config.synthetic.items_from_ids:  # no item tables, so no oracle either
    at_scale = generate_world_at_scale(config.synthetic)
    logs, generator = at_scale.logs, at_scale.items
  else:
    world = generate_world(config.synthetic, cold_item_viewers=held_out)
    logs = world.logs
  cold_items = None if world is None else world.cold_items
  train_examples = examples_lib.training_examples(
    logs, train_users, max_length, config.max_slates, seed, config.window_stride
  )
  eval_examples = examples_lib.evaluation_examples(
    logs, eval_users, max_length, config.eval_slates_per_user
  )
  repeats = Repeats(
    test=repeat_shares(eval_examples.retrieval_targets, eval_examples.retrieval_seen),
    selection=last_action_shares(logs, train_users, MIN_TEST_LENGTH),
    selection_targets="training users' last actions",
    threshold=config.repeat_threshold,
  )
  logging.info("%s", repeats.describe())
  lengths = np.diff(logs.action_offsets)
  logging.info(
    "data: %d users (%d train, %d held out), %d items, %d actions (length p50 %d, p90 %d), "
    "%d slates; %d training examples, %d retrieval and %d ranking evaluation rows",
    logs.num_users,
    len(train_users),
    len(eval_users),
    logs.num_items,
    lengths.sum(),
    np.percentile(lengths, 50),
    np.percentile(lengths, 90),
    len(logs.slate_items),
    len(train_examples["items"]),
    len(eval_examples.retrieval_targets),
    len(eval_examples.ranking_requests),
  )
  exact = examples_lib.item_log_frequency(logs, train_users)
  return PreparedData(
    logs=logs,
    item_vocabulary=ItemVocabulary.identity(logs.num_items),
    world=world,
    train_examples=train_examples,
    eval_examples=eval_examples,
    item_log_frequency=exact,
    logq_log_frequency=without_cold(
      logq_log_frequency(config, logs, train_users, seed, exact), cold_items
    ),
    repeats=repeats,
    eval_users=eval_users,
    item_features=None if world is None else synthetic_items.content_features(world.item_content),
    cold_items=cold_items,
    item_generator=generator,
  )


def load_public_sequences(
  config: DataConfig, beam_runner: str | None = None, beam_options: Sequence[str] | None = None
) -> UserSequences:
  """The public log `config` names, read once into its TFDS data set and loaded from there.

  A build runs on Apache Beam with `beam_runner` or `beam_options`
  (`tfds_builders.prepare_user_sequences`), in this process otherwise.

  Raises:
    ConfigError: `config.path` is empty.
    MissingPathError: nothing is at `config.path`.
  """
  if not config.path:
    raise ConfigError(f"data.source={config.source!r} needs --config.data.path=FOLDER_OR_FILE")
  if not os.path.exists(config.path):
    raise MissingPathError(
      f"data.source={config.source!r}: no data at {config.path!r} (the public-data configs "
      "look in ../shared/data beside the checkout); pass --config.data.path=FOLDER_OR_FILE"
    )
  tfds_dir = config.tfds_dir or os.environ.get(
    "TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets")
  )
  reader_kwargs = {"columns": dict(config.columns)} if config.columns else {}
  return tfds_builders.load_user_sequences(
    config.path,
    os.path.expanduser(tfds_dir),
    config.source,
    beam_runner=beam_runner,
    beam_options=beam_options,
    **reader_kwargs,
  )


def _prepare_public(config: DataConfig, max_length: int, seed: int) -> PreparedData:
  """A public log under PROTOCOL.md: leave-last-out, sampled training slates."""
  sequences = load_public_sequences(config)
  item_side = _item_features(config, sequences.item_vocabulary)
  split = leave_last_out(sequences)
  logging.info("\n%s", data_card(sequences, split))
  repeats = Repeats(
    test=target_repeats(sequences, split, split.test_rows),
    selection=target_repeats(sequences, split, split.valid_rows),
    selection_targets="validation targets",
    threshold=config.repeat_threshold,
  )
  logging.info("%s", repeats.describe())
  train_logs = to_user_logs(sequences, split.training_lengths(sequences))
  train_logs = protocol.sampled_impressions(
    train_logs, config.sampled_slates_per_user, config.sampled_slate_size, seed
  )
  vocabulary, features, cold = sequences.item_vocabulary, None, None
  if item_side is not None:
    vocabulary, features, cold = item_side
    # Feature-only items join the catalogue after every slate and evaluation draw is made from
    # the logged items, so they never appear in training: the model meets them by features.
    train_logs = dataclasses.replace(train_logs, num_items=len(vocabulary))
  cold_items = cold if cold is not None and cold.any() else None  # None: every item is warm
  users = np.arange(sequences.num_users)
  test = protocol.protocol_examples(sequences, split, max_length, "test", config.ranking_slates)
  exact = examples_lib.item_log_frequency(train_logs, users)
  return PreparedData(
    logs=train_logs,
    item_vocabulary=vocabulary,
    world=None,
    train_examples=examples_lib.training_examples(
      train_logs, users, max_length, config.max_slates, seed, config.window_stride
    ),
    eval_examples=test.examples,
    item_log_frequency=exact,
    logq_log_frequency=without_cold(
      logq_log_frequency(config, train_logs, users, seed, exact), cold_items
    ),
    repeats=repeats,
    eval_negatives=test.sampled_negatives,
    valid_examples=protocol.protocol_examples(sequences, split, max_length, "valid", False),
    item_features=features,
    cold_items=cold_items,
  )


def _item_features(
  config: DataConfig, vocabulary: ItemVocabulary
) -> tuple[ItemVocabulary, ItemFeatures, np.ndarray] | None:
  """The public log's item features (`read_item_features`' triple), or None without any."""
  if config.movielens_side_features:
    content = None
    if config.item_content_path:
      content = read_content_vectors(config.item_content_path, vocabulary.is_integer)
    side = movielens.movielens_side_table(config.path)
    found = item_features_from(
      vocabulary, content, side, movielens.SIDE_CATEGORICAL, movielens.SIDE_MULTI_VALUED
    )
  elif config.item_content_path or config.item_side_path:
    found = read_item_features(
      vocabulary,
      config.item_content_path,
      config.item_side_path,
      config.item_categorical,
      config.item_multi_valued,
      config.item_numeric,
    )
  else:
    return None
  _, features, cold = found
  logging.info(
    "item features: %d of %d logged items have some, %d feature-only items appended; %s",
    features.has_features[1 : len(vocabulary) + 1].sum(),
    len(vocabulary),
    cold.sum(),
    features.shapes,
  )
  return found


def without_cold(log_frequency: np.ndarray, cold_items: np.ndarray | None) -> np.ndarray:
  """`log_frequency` with -inf at the cold items: the train step then never samples them.

  A cold item stands for one added after training, which no training step could have seen.
  """
  if cold_items is None:
    return log_frequency
  return np.where(cold_items, -np.inf, log_frequency).astype(log_frequency.dtype)


def logq_log_frequency(
  config: DataConfig, logs: UserLogs, users: np.ndarray, seed: int, exact: np.ndarray
) -> np.ndarray:
  """[N + 1] the log shares the train step's log-Q reads, from `config.logq_source`.

  "exact" returns `exact` (the users' `examples.item_log_frequency`); "count_min" streams the
  users' actions through a count-min sketch seeded by `seed`, whose estimates are never below
  the exact counts.
  """
  if config.logq_source == "exact":
    return exact
  chunks = examples_lib.action_item_chunks(logs, users)
  sketched = count_min.sketch_log_frequency(
    chunks, logs.num_items, config.count_min_width, config.count_min_depth, seed
  )
  logging.info(
    "log-Q from a %d x %d count-min sketch (a share is over by at most e/width = %.2g w.p. %.3f "
    "or more); largest log-share excess over the exact counts: %.3g",
    config.count_min_depth,
    config.count_min_width,
    np.e / config.count_min_width,
    1.0 - np.exp(-config.count_min_depth),
    float(np.max(sketched[1:] - exact[1:], initial=0.0)),
  )
  return sketched
