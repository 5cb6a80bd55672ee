"""What training and evaluation both build from a run config, and the results they write."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh

from unipinrec import checkpoint, sharding
from unipinrec.config import RunConfig, to_dict
from unipinrec.data import protocol as data_protocol
from unipinrec.data.dataset import PreparedData, prepare_data
from unipinrec.errors import MissingPathError
from unipinrec.evaluation import evaluate, report
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train import item_init, partition
from unipinrec.train import state as state_lib

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The data, model, mesh, optimizer and sharded initial state of a run."""

  run: RunConfig
  data: PreparedData
  model: UniPinRec
  mesh: Mesh
  optimizer: optax.GradientTransformation
  initial_state: state_lib.TrainState
  state_shardings: state_lib.TrainState


def setup_experiment(run: RunConfig) -> Experiment:
  """Prepares the data and builds the model with its state born sharded on the mesh."""
  data = prepare_data(run.data, run.model.max_length, run.seed)
  logs = data.logs
  model = UniPinRec(
    ModelConfig(
      num_items=logs.num_items,
      num_outcomes=logs.num_outcomes,
      num_surfaces=logs.num_surfaces,
      **dataclasses.asdict(run.model),
    )
  )
  mesh = sharding.make_mesh(run.mesh)
  sharding.process_batch_shard(mesh, run.batch_size)  # fails early on a batch the mesh cannot split
  optimizer = state_lib.make_optimizer(run.optimizer)
  example = state_lib.example_batch(
    model, run.batch_size, run.data.max_slates, logs.slate_items.shape[1]
  )
  state, shardings = partition.create_sharded_state(
    model, optimizer, mesh, jax.random.key(run.seed), example
  )
  return Experiment(run, data, model, mesh, optimizer, state, shardings)


def fresh_state(experiment: Experiment) -> state_lib.TrainState:
  """The state a run starts from when it has no checkpoint.

  The initial state, with the item table warm-started when the config asks
  for it (`item_init`), from the training users' logs only.
  """
  config = experiment.run.item_init
  if config.method == "random":
    return experiment.initial_state
  data = experiment.data
  users = np.arange(data.logs.num_users)
  if data.eval_users is not None:
    users = np.setdiff1d(users, data.eval_users)
  shape = experiment.initial_state.params["tokenizer"]["item_embedding"].shape
  table = item_init.initial_table(data.logs, users, shape[0], shape[1], config)
  logging.info("item table: %s warm start from %d training users", config.method, len(users))
  return item_init.warm_start(experiment.initial_state, table)


def abstract_state(experiment: Experiment):
  """Shapes, dtypes and shardings of the state, for restoring a checkpoint into."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    experiment.initial_state,
    experiment.state_shardings,
  )


def validation_target(experiment: Experiment) -> Callable[[Any], float] | None:
  """Parameters -> retrieval NDCG@10 (filtered) on the validation targets, for early stopping.

  Only public logs have validation targets (PROTOCOL.md: model selection uses
  only the validation item); the synthetic default returns None.
  """
  valid = experiment.data.valid_examples
  if valid is None:
    return None
  names = experiment.data.logs.outcome_names

  def target(params) -> float:
    report = evaluate.evaluate_model(
      experiment.model, params, valid.examples, names, experiment.run.eval_batch_size
    )
    return report["retrieval"]["ndcg@10"]

  return target


def baseline_reports(data: PreparedData) -> dict[str, dict]:
  """Popularity's metrics on the held-out users, and on synthetic data the two oracles'."""
  names = data.logs.outcome_names
  baselines = {
    "popularity": evaluate.evaluate_popularity(
      data.eval_examples, np.asarray(data.item_log_frequency), names, data.eval_negatives
    )
  }
  if data.world is not None:
    baselines["oracle"] = evaluate.evaluate_oracle(data.world, data.eval_examples, names)
    baselines["history_oracle"] = evaluate.evaluate_history_oracle(
      data.world, data.eval_examples, names
    )
  return baselines


def evaluate_state(experiment: Experiment, params) -> dict:
  """The model's and the baselines' metrics on the held-out users."""
  data = experiment.data
  names = data.logs.outcome_names
  model_report = evaluate.evaluate_model(
    experiment.model,
    params,
    data.eval_examples,
    names,
    experiment.run.eval_batch_size,
    data.eval_negatives,
  )
  baselines = baseline_reports(data)
  protocol_notes = {}
  if data.eval_negatives is not None:
    protocol_notes = {
      "protocol": {
        "retrieval": "full catalogue, history items removed (PROTOCOL.md primary)",
        "retrieval_unfiltered": "full catalogue, nothing removed",
        "retrieval_sampled": f"target among {data_protocol.SAMPLED_NEGATIVES} never-seen items "
        f"drawn with default_rng([{data_protocol.SAMPLED_SEED}, user_id])",
        "ranking": f"test target + {data_protocol.SLATE_NEGATIVES} never-seen items drawn with "
        f"default_rng([{data_protocol.SLATE_SEED}, user_id])",
        "ranking_slate_seed": data_protocol.SLATE_SEED,
      }
    }
  return {
    **model_report,
    **protocol_notes,
    "baselines": baselines,
    "checks": report.quality_checks(model_report, baselines),
  }


def write_results(
  experiment: Experiment,
  workdir: str,
  figures: dict,
  step: int,
  command: str,
  wall_seconds: float,
  start_commit: str,
) -> dict:
  """Writes `workdir/results.json` (atomically) and returns its content.

  `start_commit` is `report.git_commit()` read when the process started: the
  code that ran. A checkout changed during the run adds `git_commit_at_end`.
  """
  document = {
    **figures,
    "step": step,
    "config": to_dict(experiment.run),
    "command": command,
    **report.commit_record(start_commit),
    "seed": experiment.run.seed,
    "wall_seconds": wall_seconds,
    "devices": [str(d) for d in jax.devices()],
  }
  if jax.process_index() == 0:
    report.write_json_atomic(os.path.join(workdir, RESULTS_FILE), document)
  return document


def evaluation_params(experiment: Experiment, state: state_lib.TrainState):
  """The parameters a run evaluates at `state`: their moving average where the config keeps one."""
  return state_lib.evaluated_params(state, experiment.run.optimizer.ema_decay)


def best_params(
  experiment: Experiment, workdir: str, state: state_lib.TrainState
) -> tuple[Any, int | None]:
  """The validated best parameters in `workdir/best` with their step, else `state`'s evaluated."""
  final_params = evaluation_params(experiment, state)
  if experiment.data.valid_examples is None or experiment.run.eval_every <= 0:
    return final_params, None
  manager = checkpoint.make_best_manager(workdir)
  record = checkpoint.best_validation(manager)
  if record is None:
    return final_params, None
  abstract = abstract_state(experiment).params
  return checkpoint.restore_best(manager, abstract), record[0]


def restore_trained(run: RunConfig, workdir: str) -> tuple[Experiment, Any, int, int | None]:
  """A finished (or interrupted) run: (experiment, evaluated parameters, step, best step).

  The parameters are the validated best where the run kept one, else the
  newest checkpoint's.

  Raises:
    MissingPathError: when `workdir` holds no checkpoint.
  """
  experiment = setup_experiment(run)
  manager = checkpoint.make_manager(workdir, run.checkpoint)
  state = checkpoint.restore_latest(manager, abstract_state(experiment), data_iterator=None)
  if state is None:
    raise MissingPathError(f"no checkpoint in {os.path.abspath(workdir)}/checkpoints")
  params, best_step = best_params(experiment, workdir, state)
  return experiment, params, int(state.step), best_step
