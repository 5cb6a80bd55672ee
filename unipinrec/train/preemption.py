"""SIGTERM as a preemption notice: every process saves at the same step, then stops.

Schedulers (Cloud TPU maintenance, SLURM, Kubernetes) send SIGTERM some time
before they kill a job. Processes may get it at different steps, so with
several processes JAX's preemption sync manager (started by
`jax.distributed.initialize`, which also catches the signal) chooses one
step for all of them. A single process catches the signal itself and stops
at its next step.
"""

from __future__ import annotations

import signal
import threading
import types

import jax
from absl import logging
from jax.experimental import multihost_utils


class Preempted(Exception):
  """Raised by the training loop once the preemption checkpoint is written.

  The process should exit with status 0; the next launch resumes.
  """

  def __init__(self, step: int):
    super().__init__(f"preempted: saved step {step}, relaunch to continue")
    self.step = step


class PreemptionNotice:
  """A context manager whose `reached(step)` says: save at this step and stop.

  Call `reached` once per step, with the same steps on every process.
  """

  def __init__(self):
    self._received = threading.Event()
    self._previous_handler = None
    # jax.distributed.initialize starts the sync manager unless the service is switched off.
    self._synced = jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service

  def __enter__(self) -> PreemptionNotice:
    if not self._synced and threading.current_thread() is threading.main_thread():
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None

  def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    logging.warning("signal %d: saving at the next step, then stopping", signum)
    self._received.set()

  def reached(self, step: int) -> bool:
    """Whether to save a checkpoint at `step` and stop."""
    if self._synced:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received.is_set()
