"""What training and evaluation both build from a run config: data, model, mesh, sharded state."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh

from unipinrec import checkpoint, sharding
from unipinrec.config import RunConfig, for_data, from_mapping
from unipinrec.data.dataset import PreparedData, prepare_data
from unipinrec.errors import ConfigError, MissingPathError
from unipinrec.model.item_encoder import feature_tables, generator_tables
from unipinrec.model.unified import UniPinRec
from unipinrec.train import hashed_init, item_init, partition, schedule
from unipinrec.train import state as state_lib

CONFIG_FILE = "config.json"  # the run config, as a work directory records it


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


def read_run_config(workdir: str) -> RunConfig:
  """The configuration a training run recorded as `workdir/config.json`.

  Raises:
    MissingPathError: when `workdir` or its config.json does not exist.
  """
  if not os.path.isdir(workdir):
    raise MissingPathError(f"{workdir}: no such work directory")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise MissingPathError(f"{path}: no config.json; is {workdir} a training work directory?")
  with open(path) as f:
    return from_mapping(json.load(f))


def setup_experiment(run: RunConfig) -> Experiment:
  """Prepares the data and builds the model with its state born sharded on the mesh."""
  data = prepare_data(run.data, run.model.max_length, run.seed)
  logs = data.logs
  num_examples = len(data.train_examples["items"])
  run = for_data(run, num_examples, logs.num_items)
  loss = run.step.loss
  rate = run.optimizer.schedule
  if rate == "wsd":
    start, end = schedule.budget_window(run.num_steps, run.optimizer.decay_fraction)
    rate += f" (decaying from step {start} to {end}, or from a plateau of the validation)"
  logging.info(
    "budget: %d steps of %d (%.1f passes over %d training examples); rate %s; softmax %s%s",
    run.num_steps,
    run.batch_size,
    run.num_steps * run.batch_size / max(num_examples, 1),
    num_examples,
    rate,
    loss.softmax,
    "" if loss.full_softmax else f" with {loss.num_random_negatives} random negatives",
  )
  model_config = run.model.with_data_sizes(logs.num_items, logs.num_outcomes, logs.num_surfaces)
  if data.item_features is not None:
    model_config = model_config.with_item_features(data.item_features.shapes)
  generator = data.item_generator
  if generator is not None and generator.content_dim:
    model_config = model_config.with_item_generator(generator)
  model = UniPinRec(model_config)
  mesh = sharding.make_mesh(run.mesh)
  sharding.process_batch_shard(mesh, run.batch_size)  # fails early on a batch the mesh cannot split
  optimizer = state_lib.make_optimizer(run.optimizer, run.num_steps)
  example = state_lib.example_batch(
    model, run.batch_size, run.data.max_slates, logs.slate_items.shape[1]
  )
  state, shardings = partition.create_sharded_state(
    model, optimizer, mesh, jax.random.key(run.seed), example
  )
  if data.item_features is not None:  # the encoder's frozen tables hold the data's features
    state = item_init.place_item_tables(state, feature_tables(data.item_features))
  if model_config.content_generator:  # or the generator that computes them
    state = item_init.place_item_tables(state, generator_tables(generator))
  return Experiment(run, data, model, mesh, optimizer, state, shardings)


def fresh_state(experiment: Experiment) -> state_lib.TrainState:
  """The state a run starts from when it has no checkpoint.

  The initial state, with the item id part (the id table or the hashed tables)
  warm-started when the config asks for it (`item_init`), from the training users' logs only.
  """
  config = experiment.run.item_init
  if config.method == "random":
    return experiment.initial_state
  data = experiment.data
  users = np.arange(data.logs.num_users)
  if data.eval_users is not None:
    users = np.setdiff1d(users, data.eval_users)
  model = experiment.model.config
  if data.item_generator is not None:
    raise ConfigError(
      f"item_init.method={config.method!r} builds a vector per catalogue item; with "
      "data.synthetic.items_from_ids set item_init.method='random'"
    )
  if model.item_id_part == "none":
    raise ConfigError(
      f"item_init.method={config.method!r} warm-starts the item id part; "
      "model.item_id_part='none' has none (set item_init.method='random')"
    )
  if model.item_id_part == "hashed":
    table, fitted, error = hashed_init.hashed_table(data.logs, users, model, config)
    logging.info(
      "hashed item ids: %s warm start of %d items into %d x %d rows (%s) from %d training "
      "users, weighted squared error %.3f of the vectors'",
      config.method,
      fitted,
      model.hash_functions,
      model.hash_rows,
      model.hash_combine,
      len(users),
      error,
    )
    return item_init.place_item_tables(experiment.initial_state, {"hashed_embedding": table})
  shape = experiment.initial_state.params["tokenizer"]["item_embedding"].shape
  table = item_init.initial_table(data.logs, users, shape[0], shape[1], config)
  logging.info("item table: %s warm start from %d training users", config.method, len(users))
  return item_init.place_item_tables(experiment.initial_state, {"item_embedding": table})


def abstract_state(experiment: Experiment):
  """Shapes, dtypes and shardings of the state, for restoring a checkpoint into."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    experiment.initial_state,
    experiment.state_shardings,
  )


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
