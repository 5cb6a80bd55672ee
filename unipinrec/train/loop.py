"""The training loop: jit once, step, log, checkpoint, resume, evaluate at the end."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import tensorboardX
from absl import logging
from jax.experimental import multihost_utils

from unipinrec import checkpoint, sharding
from unipinrec.config import RunConfig
from unipinrec.data.pipeline import training_iterator
from unipinrec.train import partition, schedule
from unipinrec.train.experiment import Experiment, abstract_state, evaluation_params, fresh_state
from unipinrec.train.preemption import Preempted, PreemptionNotice
from unipinrec.types import TrainBatch

# Why training ended, as results.json's "stopped" says.
STOPPED_AT_NUM_STEPS = "num_steps"
STOPPED_BY_PATIENCE = "patience"
STOPPED_AFTER_DECAY = "patience_then_decay"  # the "wsd" schedule's end
STOPPED_BY_TIME = "max_train_minutes"


@dataclasses.dataclass(frozen=True)
class Trained:
  """The loop's outcome: the final state and why training ended (a STOPPED_* value)."""

  state: Any
  stopped: str


def _time_is_up(started: float, max_minutes: float) -> bool:
  """Whether this launch has trained `max_minutes`; process 0's clock decides for all."""
  up = time.monotonic() - started > 60.0 * max_minutes
  if jax.process_count() > 1:  # every process must stop at the same step
    up = bool(multihost_utils.broadcast_one_to_all(np.asarray(up)))
  return up


class _Progress:
  """Periodic log lines with throughput and time left."""

  def __init__(self, first_step: int, num_steps: int):
    self.num_steps = num_steps
    self._mark_step, self._mark_time = first_step, time.time()

  def line(self, step: int, metrics: dict[str, float]) -> str:
    now = time.time()
    rate = (step - self._mark_step) / max(now - self._mark_time, 1e-9)
    self._mark_step, self._mark_time = step, now
    eta = (self.num_steps - step) / rate if rate > 0 else math.inf
    values = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
    return f"step {step}/{self.num_steps}  {values}  {rate:.1f} steps/s  eta {eta / 60:.1f} min"


class _Validation:
  """Validation every `eval_every` steps: the best parameters so far kept in `workdir/best`, and
  whether `patience` validations in a row have brought nothing."""

  def __init__(self, run: RunConfig, workdir: str, validate: Callable[[Any], float], writer: Any):
    self._run, self._validate, self._writer = run, validate, writer
    self._manager = checkpoint.make_best_manager(workdir)
    self.best = checkpoint.best_validation(self._manager)  # (step, value), or None before any

  def due(self, step: int, last_step: int) -> bool:
    """Every `eval_every` steps, and at the run's last step: a run ends between validations."""
    return step % self._run.eval_every == 0 or step == last_step

  def patience_spent(self, step: int) -> bool:
    run = self._run
    return (
      bool(run.patience)
      and self.best is not None
      and (step - self.best[0] >= run.patience * run.eval_every)
    )

  def __call__(self, step: int, params) -> None:
    """Validates `params` (those of `step`) and keeps them if they are the best so far."""
    value = self._validate(params)
    if self.best is None or value > self.best[1]:
      self.best = (step, value)
      checkpoint.save_best(self._manager, step, params, value)
    logging.info("step %d  validation %.4f  (best %.4f at step %d)", step, value, *self.best[::-1])
    if self._writer is not None:
      self._writer.add_scalar("validation/target", value, step)


def jit_train_step(experiment: Experiment) -> jax.stages.Wrapped:
  """The experiment's train step, jitted once over its mesh (`partition.jit_train_step`)."""
  run = experiment.run
  return partition.jit_train_step(
    experiment.model,
    experiment.optimizer,
    run.step,
    run.seed + 1,
    experiment.mesh,
    experiment.state_shardings,
  )


def train(experiment: Experiment, workdir: str, validate: Callable[[Any], float] | None = None):
  """Trains to `run.num_steps`, resuming from the newest checkpoint in `workdir`.

  The data order and every random draw are functions of the seed and the
  step, so a resumed run retraces the uninterrupted one exactly, on the same
  mesh or another.

  On SIGTERM (a preemption notice) it saves at the next step and raises
  `Preempted`; the next launch continues from there.

  With `validate` (parameters -> a figure to maximise) and `run.eval_every`,
  the best parameters so far are kept in `workdir/best`, and training stops
  early once `run.patience` validations in a row bring no improvement; with the "wsd"
  schedule that starts the rate's decay instead, and training stops when it ends. With
  `run.max_train_minutes`, it saves and stops at the first log step past that
  much training in this launch.

  Returns:
    The final train state and why training ended.

  Raises:
    Preempted: after saving, on a preemption notice.
  """
  run = experiment.run
  mesh = experiment.mesh
  data_iterator = training_iterator(
    experiment.data.train_examples,
    run.batch_size,
    run.seed,
    sharding.process_batch_shard(mesh, run.batch_size),
  )
  manager = checkpoint.make_manager(workdir, run.checkpoint)
  state = checkpoint.restore_latest(
    manager, abstract_state(experiment), data_iterator, set_aside_unreadable=True
  )
  if state is None:
    state = fresh_state(experiment)
  else:
    logging.info("resumed from step %d in %s", int(state.step), workdir)

  item_log_frequency = jax.device_put(experiment.data.logq_log_frequency, sharding.replicated(mesh))
  step_fn = jit_train_step(experiment)
  writer = (
    tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
    if jax.process_index() == 0
    else None
  )
  first_step = int(state.step)
  progress = _Progress(first_step, run.num_steps)
  validation = (
    _Validation(run, workdir, validate, writer)
    if validate is not None and run.eval_every > 0
    else None
  )
  window = schedule.current_window(state.opt_state)  # the wsd decay's (start, end), else None
  budget_end = schedule.budget_window(run.num_steps, run.optimizer.decay_fraction)[1]
  if window is None and validation is not None and validation.patience_spent(first_step):
    logging.info("stopped early before (best validation %.4f at step %d)", *validation.best[::-1])
    return Trained(state, STOPPED_BY_PATIENCE)
  if window is not None and budget_end != window[1] <= first_step:
    logging.info("the rate's decay ended before, at step %d", window[1])
    return Trained(state, STOPPED_AFTER_DECAY)
  if window is not None:
    progress.num_steps = window[1]
  preempted = False
  stopped = STOPPED_AT_NUM_STEPS
  started = time.monotonic()
  with PreemptionNotice() as notice:
    for step in range(first_step + 1, run.num_steps + 1):
      batch = TrainBatch(**sharding.global_batch(mesh, next(data_iterator), run.batch_size))
      state, metrics = step_fn(state, batch, item_log_frequency)
      if step % run.log_every == 0 or step == run.num_steps:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
          raise FloatingPointError(f"non-finite {', '.join(bad)} at step {step}: {values}")
        logging.info(progress.line(step, values))
        if writer is not None:
          for name, value in values.items():
            writer.add_scalar(f"train/{name}", value, step)
      stop = decay_started = False
      if run.max_train_minutes and step % run.log_every == 0:
        stop = _time_is_up(started, run.max_train_minutes)
        if stop:
          stopped = STOPPED_BY_TIME
          logging.info("stop at step %d: %.0f minutes of training", step, run.max_train_minutes)
      last_step = run.num_steps if window is None else window[1]
      if validation is not None and validation.due(step, last_step):
        validation(step, evaluation_params(experiment, state))
        best_step, spent = validation.best[0], validation.patience_spent(step)
        if spent and window is None:
          stop, stopped = True, STOPPED_BY_PATIENCE
          logging.info("early stop at step %d: no better validation since step %d", step, best_step)
        elif spent and step < window[0]:
          window = schedule.decay_window(step, run.optimizer.decay_fraction)
          state = state.replace(opt_state=schedule.start_decay(state.opt_state, window))
          progress.num_steps, decay_started = window[1], True
          logging.info(
            "no better validation since step %d: the rate decays from step %d to %d, then stops",
            best_step,
            *window,
          )
      if window is not None and step == window[1] != budget_end:
        stop, stopped = True, STOPPED_AFTER_DECAY
      preempted = notice.reached(step)
      checkpoint.save(
        manager,
        step,
        state,
        data_iterator,
        force=stop or preempted or decay_started or step == run.num_steps,
      )
      if stop or preempted:
        break
  manager.wait_until_finished()
  if writer is not None:
    writer.close()
  if preempted:
    raise Preempted(step)
  return Trained(state, stopped)
