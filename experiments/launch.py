"""What every launcher shares: the run config at the edge, the command line, the summary."""

import json
import logging as std_logging
import math
import os
import shlex
import sys

import jax
import ml_collections
from absl import flags, logging

from unipinrec.config import RunConfig, from_mapping, to_dict
from unipinrec.evaluation.report import write_json_atomic
from unipinrec.experiment import CONFIG_FILE
from unipinrec.export.checkpoint import read_run_config

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


def _prepare_process() -> None:
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


def start(config: ml_collections.ConfigDict, workdir: str) -> RunConfig:
  """Converts the ConfigDict once and records it as WORKDIR/config.json."""
  _prepare_process()
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
  _prepare_process()
  return read_run_config(workdir)


def log_figures(rows: list[tuple[str, dict]]) -> None:
  """A table of (name, report) rows: retrieval HR/NDCG@10 and MRR, ranking AUC and NDCG@5."""
  logging.info("%-15s %8s %8s %8s %10s %8s", "", "HR@10", "NDCG@10", "MRR", "AUC(eng)", "NDCG@5")
  for name, figures in rows:
    retrieval = figures["retrieval"]
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
  log_figures([("model", document)] + list(document["baselines"].items()))
  logging.info("checks: %s", json.dumps(document["checks"]))
  logging.info("wrote %s", path)
