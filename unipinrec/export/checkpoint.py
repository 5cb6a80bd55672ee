"""A training work directory -> the `ServingModel` of its best validated (else newest) step."""

from __future__ import annotations

import hashlib
import json

from unipinrec.config import RunConfig, to_dict
from unipinrec.export.model import ServingModel
from unipinrec.train.experiment import Experiment, read_run_config, restore_trained

# Serving settings do not change what the parameters compute, so they stay out of the hash.
_UNHASHED = ("index", "serving")


def config_hash(run: RunConfig) -> str:
  """A short digest of everything in the run's configuration that shapes its parameters."""
  values = {k: v for k, v in to_dict(run).items() if k not in _UNHASHED}
  return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def restore_serving_model(
  workdir: str, run: RunConfig | None = None
) -> tuple[ServingModel, Experiment]:
  """The parameters training would evaluate of `workdir`'s run (the best validated step, else
  the newest), with the experiment they belong to.

  The data are prepared as in training (`restore_trained`) since the model's
  catalogue size and outcome names come from them.

  Raises:
    MissingPathError: when `workdir` holds no config.json or no checkpoint.
  """
  run = run or read_run_config(workdir)
  experiment, params, step, best_step = restore_trained(run, workdir)
  serving = ServingModel(
    model=experiment.model,
    params=params,
    step=step if best_step is None else best_step,
    config_hash=config_hash(run),
    outcome_names=tuple(experiment.data.logs.outcome_names),
  )
  return serving, experiment
