"""One call from a data configuration to everything training and evaluation read."""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from unipinrec.data import examples as examples_lib
from unipinrec.data.synthetic import SyntheticConfig, SyntheticWorld, generate_world
from unipinrec.types import UserLogs


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the logs come from and how examples are cut from them."""

  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
  holdout_fraction: float = 0.2  # users kept out of training, for evaluation
  max_slates: int = 16  # slates per blended example
  eval_slates_per_user: int = 5  # a held-out user's last slates ranked in evaluation


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """Logs, blended training examples, held-out examples and item statistics."""

  logs: UserLogs
  world: SyntheticWorld | None  # the ground truth, for synthetic data only
  train_examples: dict[str, np.ndarray]
  eval_examples: examples_lib.EvalExamples
  item_log_frequency: np.ndarray  # [N + 1] from training users only


def prepare_data(config: DataConfig, max_length: int, seed: int) -> PreparedData:
  """Generates (or reads) the logs and cuts them into examples, deterministically."""
  world = generate_world(config.synthetic)
  logs = world.logs
  train_users, eval_users = examples_lib.split_users(logs.num_users, config.holdout_fraction, seed)
  train_examples = examples_lib.training_examples(
    logs, train_users, max_length, config.max_slates, seed
  )
  eval_examples = examples_lib.evaluation_examples(
    logs, eval_users, max_length, config.eval_slates_per_user
  )
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
  return PreparedData(
    logs=logs,
    world=world,
    train_examples=train_examples,
    eval_examples=eval_examples,
    item_log_frequency=examples_lib.item_log_frequency(logs, train_users),
  )
