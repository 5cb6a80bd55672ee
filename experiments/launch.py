"""What every launcher shares: the run config at the edge, the command line, the summary."""

import json
import logging as std_logging
import os
import shlex
import sys

import ml_collections
from absl import logging

from unipinrec.config import RunConfig, from_mapping, to_dict
from unipinrec.evaluation.report import write_json_atomic
from unipinrec.experiment import CONFIG_FILE

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "synthetic.py")


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax and grain (every checkpoint logs dozens of lines)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= std_logging.WARNING or not noisy


def quiet_libraries() -> None:
  """Keeps the launchers' own progress lines readable."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


def command(module: str) -> str:
  """The exact command line, reproducible from the repository root."""
  return " ".join(["python", "-m", f"experiments.{module}"] + [shlex.quote(a) for a in sys.argv[1:]])


def start(config: ml_collections.ConfigDict, workdir: str) -> RunConfig:
  """Converts the ConfigDict once and records it as WORKDIR/config.json."""
  quiet_libraries()
  run = from_mapping(config.to_dict())
  write_json_atomic(os.path.join(workdir, CONFIG_FILE), to_dict(run))
  logging.info("work directory %s", os.path.abspath(workdir))
  return run


def load_run_config(workdir: str) -> RunConfig:
  """The configuration a training run recorded in its work directory."""
  quiet_libraries()
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no config.json; is {workdir} a training work directory?")
  with open(path) as f:
    return from_mapping(json.load(f))


def log_summary(document: dict, path: str) -> None:
  """One screen of the headline figures, model beside the baselines."""
  rows = [("model", document)] + list(document["baselines"].items())
  logging.info("%-12s %8s %8s %8s %10s %8s", "", "HR@10", "NDCG@10", "MRR", "AUC(eng)", "NDCG@5")
  for name, figures in rows:
    retrieval, ranking = figures["retrieval"], figures["ranking"]
    logging.info(
        "%-12s %8.4f %8.4f %8.4f %10.4f %8.4f",
        name, retrieval["hr@10"], retrieval["ndcg@10"], retrieval["mrr"],
        ranking["auc_engaged"], ranking["ndcg@5"],
    )
  logging.info("checks: %s", json.dumps(document["checks"]))
  logging.info("wrote %s", path)
