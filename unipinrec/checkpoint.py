"""Orbax checkpoints of the train state together with the data iterator's position.

Orbax writes each step into a temporary directory and renames it when
complete, so a kill mid-write leaves the previous checkpoint as the latest.
Every process calls `save` (each writes its own shards); the restore reads
them into whatever shardings the target mesh asks for, so a checkpoint
written on one mesh resumes on another. The iterator's position is the same
on every process (`pipeline.training_iterator`), so one JSON copy of it,
written by the primary process, serves any process count.
"""

from __future__ import annotations

import dataclasses
import os

import grain
import orbax.checkpoint as ocp


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When to save and how many to keep."""

  every_steps: int = 500
  keep: int = 3


def make_manager(workdir: str, config: CheckpointConfig) -> ocp.CheckpointManager:
  """A manager over `workdir/checkpoints` holding items `state` and `data`."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  options = ocp.CheckpointManagerOptions(
    save_interval_steps=config.every_steps, max_to_keep=config.keep, create=True
  )
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state,
  data_iterator: grain.DatasetIterator,
  force: bool = False,
) -> bool:
  """Saves if the step is due (or `force`); returns whether a save started."""
  return manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_iterator.get_state()),
    ),
    force=force,
  )


def restore_latest(
  manager: ocp.CheckpointManager, abstract_state, data_iterator: grain.DatasetIterator | None
):
  """Restores the newest checkpoint into `abstract_state`'s shapes and shardings (any mesh).

  The data iterator, when given, is moved in place to the saved position.

  Returns:
    The restored state, or None when the directory holds no checkpoint.
  """
  step = manager.latest_step()
  if step is None:
    return None
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = ocp.args.JsonRestore()
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  if data_iterator is not None:
    data_iterator.set_state(restored["data"])
  return restored["state"]


def make_best_manager(workdir: str) -> ocp.CheckpointManager:
  """A manager over `workdir/best`: the parameters of the best validation step only."""
  directory = os.path.join(os.path.abspath(workdir), "best")
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
  return ocp.CheckpointManager(directory, options=options, item_names=("params", "validation"))


def save_best(manager: ocp.CheckpointManager, step: int, params, value: float) -> None:
  """Replaces the kept parameters with `params`, validated at `value` on `step`."""
  manager.save(
    step,
    args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      validation=ocp.args.JsonSave({"step": step, "value": value}),
    ),
    force=True,
  )
  manager.wait_until_finished()


def best_validation(manager: ocp.CheckpointManager) -> tuple[int, float] | None:
  """(step, value) of the kept best parameters, or None before the first validation."""
  step = manager.latest_step()
  if step is None:
    return None
  record = manager.restore(step, args=ocp.args.Composite(validation=ocp.args.JsonRestore()))
  return int(record["validation"]["step"]), float(record["validation"]["value"])


def restore_best(manager: ocp.CheckpointManager, abstract_params):
  """The kept best parameters, in `abstract_params`' shapes and shardings, or None."""
  step = manager.latest_step()
  if step is None:
    return None
  restored = manager.restore(
    step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
  )
  return restored["params"]
