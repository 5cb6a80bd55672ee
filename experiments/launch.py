"""What every launcher shares: the run config at the edge, the command line, the summary."""

import contextlib
import functools
import json
import logging as std_logging
import math
import os
import shlex
import sys
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from absl import flags, logging
from jax.experimental import multihost_utils

from unipinrec.config import RunConfig, from_mapping, to_dict
from unipinrec.records import write_json_atomic
from unipinrec.train.experiment import CONFIG_FILE, read_run_config
from unipinrec.workdir_lock import WorkdirLock, WorkdirLocked

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "synthetic.py")

_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Call jax.distributed.initialize() before anything else: one process per host on TPU pods "
  "and multi-node GPU clusters. Unset values are detected by JAX (TPU metadata, SLURM, "
  "Open MPI); the coordinator may also come from JAX_COORDINATOR_ADDRESS.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0, with --distributed."
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "Processes in all, with --distributed."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, with --distributed.")


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax and grain (every checkpoint logs dozens of lines)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= std_logging.WARNING or not noisy


@functools.cache  # once per process, whichever launcher function comes first
def prepare_process() -> None:
  """Quiets library chatter and joins the other processes of a multi-host run."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if _DISTRIBUTED.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def command(module: str) -> str:
  """The exact command line, reproducible from the repository root."""
  return " ".join(
    ["python", "-m", f"experiments.{module}"] + [shlex.quote(a) for a in sys.argv[1:]]
  )


@contextlib.contextmanager
def workdir_locked(workdir: str) -> Iterator[None]:
  """Holds WORKDIR's lock (`unipinrec.workdir_lock`) meanwhile; process 0 takes it for all.

  Raises:
    WorkdirLocked: in every process when process 0 is refused (`cli.run` reports it in one line
      with exit status 2).
  """
  prepare_process()
  lock = WorkdirLock(workdir, primary=jax.process_index() == 0)
  try:
    lock.acquire()
  except WorkdirLocked as error:
    refusal = str(error)
  else:
    refusal = None
  # The other processes learn process 0's answer: none may write where another run does.
  if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(np.int32(not refusal)):
    refusal = refusal or f"process 0 was refused the lock of work directory {workdir}"
  if refusal:
    raise WorkdirLocked(refusal)
  try:
    yield
  finally:
    lock.release()


def start(config: ml_collections.ConfigDict, workdir: str) -> RunConfig:
  """Converts the ConfigDict once and records it as WORKDIR/config.json."""
  prepare_process()
  run = from_mapping(config.to_dict())
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), to_dict(run))
  logging.info("work directory %s", os.path.abspath(workdir))
  return run


def load_run_config(workdir: str) -> RunConfig:
  """The configuration a training run recorded in its work directory, once libraries are quiet.

  Raises:
    MissingPathError: when `workdir` or its config.json does not exist.
  """
  prepare_process()
  return read_run_config(workdir)


def log_figures(rows: list[tuple[str, dict]], primary: str) -> None:
  """A table of (name, report) rows: HR/NDCG@10 and MRR of the `primary` retrieval figure
  ("retrieval" or "retrieval_unfiltered"), ranking AUC and NDCG@5."""
  logging.info("retrieval figures: %s (primary)", primary)
  logging.info("%-15s %8s %8s %8s %10s %8s", "", "HR@10", "NDCG@10", "MRR", "AUC(eng)", "NDCG@5")
  for name, figures in rows:
    retrieval = figures[primary]
    ranking = figures.get("ranking", {"auc_engaged": math.nan, "ndcg@5": math.nan})
    logging.info(
      "%-15s %8.4f %8.4f %8.4f %10.4f %8.4f",
      name,
      retrieval["hr@10"],
      retrieval["ndcg@10"],
      retrieval["mrr"],
      ranking["auc_engaged"],
      ranking["ndcg@5"],
    )


def log_summary(document: dict, path: str) -> None:
  """One screen of the headline figures, model beside the baselines."""
  log_figures([("model", document)] + list(document["baselines"].items()), document["primary"])
  logging.info("checks: %s", json.dumps(document["checks"]))
  logging.info("wrote %s", path)
