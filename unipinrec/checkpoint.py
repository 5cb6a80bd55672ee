"""Orbax checkpoints of the train state together with the data iterator's position.

Orbax writes each step into a temporary directory and renames it when
complete, so a kill mid-write leaves the previous checkpoint as the latest.
A step that does not read back (a truncated file) is reported and skipped
for the next older one; the training renames its directory out of the way.
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
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from unipinrec.errors import UserInputError


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


class UnreadableCheckpoints(UserInputError, RuntimeError):
  """Checkpoints exist, but none of them restores: resuming would silently discard the run.

  The launchers report it in one line (the files need the user's decision), not as a bug.
  """


def restore_latest(
  manager: ocp.CheckpointManager,
  abstract_state,
  data_iterator: grain.DatasetIterator | None,
  set_aside_unreadable: bool = False,
):
  """Restores the newest checkpoint that reads back, in `abstract_state`'s shapes and shardings.

  A step that fails to restore (a truncated or missing file) is reported with a
  warning and the next older one is tried. With `set_aside_unreadable` (for the
  training, which saves those step numbers again) the directories of the steps
  that failed are renamed `<step>.corrupt`, a name orbax does not list, so that
  nothing written is deleted. The data iterator, when given, is moved in place
  to the restored position.

  Returns:
    The restored state, or None when the directory holds no checkpoint.

  Raises:
    UnreadableCheckpoints: when there are checkpoints but none restores.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  unreadable = []
  for step in steps:
    restored, failure = _try_restore(manager, step, abstract_state, data_iterator is not None)
    if _on_every_process(failure is None):
      break
    logging.warning(
      "checkpoint step %d in %s does not restore, skipping it: %s",
      step,
      _step_directory(manager, step),
      failure or "it failed on another process",
    )
    unreadable.append(step)
  else:
    if steps:
      raise UnreadableCheckpoints(
        f"no checkpoint in {manager.directory} restores (steps {steps} failed, see the warnings "
        "above); move them aside to start afresh"
      )
    return None
  if set_aside_unreadable and unreadable:
    _set_aside(manager, unreadable)
  if data_iterator is not None:
    data_iterator.set_state(restored["data"])
  return restored["state"]


def _try_restore(
  manager: ocp.CheckpointManager, step: int, abstract_state, with_data: bool
) -> tuple[dict | None, str | None]:
  """(the restored items, None), or (None, the error in one line) when `step` does not restore."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if with_data:
    items["data"] = ocp.args.JsonRestore()
  try:
    return manager.restore(step, args=ocp.args.Composite(**items)), None
  except Exception as error:  # whatever broke the step, an older one may be whole
    return None, _innermost(error)


def _innermost(error: BaseException) -> str:
  """The first line of the innermost error: orbax wraps TensorStore's in a page of its spec."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  lines = str(error).splitlines()
  return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process: all of them must resume from the same step."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.process_allgather(np.int32(ok)).min())


def _step_directory(manager: ocp.CheckpointManager, step: int) -> str:
  """The directory of `step` under the default step names, which `make_manager` keeps."""
  return os.path.join(str(manager.directory), str(step))


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Renames the steps' directories to `<step>.corrupt` (else `.corrupt.2`, ...) and relists."""
  if jax.process_index() == 0:
    for step in steps:
      directory = _step_directory(manager, step)
      aside, copy = f"{directory}.corrupt", 1
      while os.path.exists(aside):
        copy += 1
        aside = f"{directory}.corrupt.{copy}"
      os.rename(directory, aside)
      logging.warning("moved the unreadable checkpoint %s aside to %s", directory, aside)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("unipinrec: unreadable checkpoints set aside")
  # The manager's cached list would still hold the steps: it would neither save nor re-save them.
  manager.reload()


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
