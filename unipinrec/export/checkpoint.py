"""A training work directory -> the `ServingModel` of its best validated (else newest) step."""

from __future__ import annotations

import hashlib
import json
import os

from unipinrec import checkpoint
from unipinrec.config import RunConfig, from_mapping, to_dict
from unipinrec.errors import MissingPathError
from unipinrec.experiment import (
  CONFIG_FILE,
  Experiment,
  abstract_state,
  best_params,
  setup_experiment,
)
from unipinrec.export.model import ServingModel

# Serving settings do not change what the parameters compute, so they stay out of the hash.
_UNHASHED = ("index", "serving")


def config_hash(run: RunConfig) -> str:
  """A short digest of everything in the run's configuration that shapes its parameters."""
  values = {k: v for k, v in to_dict(run).items() if k not in _UNHASHED}
  return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


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


def restore_serving_model(experiment: Experiment, workdir: str) -> ServingModel:
  """The parameters training would evaluate: the best validated step, else the newest."""
  run = experiment.run
  manager = checkpoint.make_manager(workdir, run.checkpoint)
  state = checkpoint.restore_latest(manager, abstract_state(experiment), data_iterator=None)
  if state is None:
    raise MissingPathError(f"no checkpoint in {os.path.abspath(workdir)}/checkpoints")
  params, best_step = best_params(experiment, workdir, state)
  return ServingModel(
    model=experiment.model,
    params=params,
    step=int(state.step) if best_step is None else best_step,
    config_hash=config_hash(run),
    outcome_names=tuple(experiment.data.logs.outcome_names),
  )


def load_serving_model(workdir: str, run: RunConfig | None = None) -> ServingModel:
  """`restore_serving_model` of `workdir`'s run.

  The data are prepared as in training (`setup_experiment`) since the model's
  catalogue size and outcome names come from them.
  """
  return restore_serving_model(setup_experiment(run or read_run_config(workdir)), workdir)
