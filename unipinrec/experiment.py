"""What training and evaluation both build from a run config, and the results they write."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from unipinrec import sharding
from unipinrec.config import RunConfig, to_dict
from unipinrec.data.dataset import PreparedData, prepare_data
from unipinrec.evaluation import evaluate, report
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
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
  mesh = sharding.make_mesh(run.model_parallelism)
  optimizer = state_lib.make_optimizer(run.optimizer)
  example = state_lib.example_batch(
    model, run.batch_size, run.data.max_slates, logs.slate_items.shape[1]
  )
  state, shardings = state_lib.create_sharded_state(
    model, optimizer, mesh, jax.random.key(run.seed), example
  )
  return Experiment(run, data, model, mesh, optimizer, state, shardings)


def abstract_state(experiment: Experiment):
  """Shapes, dtypes and shardings of the state, for restoring a checkpoint into."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    experiment.initial_state,
    experiment.state_shardings,
  )


def evaluate_state(experiment: Experiment, params) -> dict:
  """The model's and the baselines' metrics on the held-out users."""
  data = experiment.data
  names = data.logs.outcome_names
  model_report = evaluate.evaluate_model(
    experiment.model, params, data.eval_examples, names, experiment.run.eval_batch_size
  )
  baselines = {
    "popularity": evaluate.evaluate_popularity(
      data.eval_examples, np.asarray(data.item_log_frequency), names
    )
  }
  if data.world is not None:
    baselines["oracle"] = evaluate.evaluate_oracle(data.world, data.eval_examples, names)
  return {
    **model_report,
    "baselines": baselines,
    "checks": report.quality_checks(model_report, baselines),
  }


def write_results(
  experiment: Experiment, workdir: str, figures: dict, step: int, command: str, wall_seconds: float
) -> dict:
  """Writes `workdir/results.json` (atomically) and returns its content."""
  document = {
    **figures,
    "step": step,
    "config": to_dict(experiment.run),
    "command": command,
    "git_commit": report.git_commit(),
    "seed": experiment.run.seed,
    "wall_seconds": wall_seconds,
    "devices": [str(d) for d in jax.devices()],
  }
  if jax.process_index() == 0:
    report.write_json_atomic(os.path.join(workdir, RESULTS_FILE), document)
  return document
