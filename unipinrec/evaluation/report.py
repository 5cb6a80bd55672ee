"""The figures of results.json: the model's and the baselines' on the held-out users, the checks
they are judged by, and the validation target training stops on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from unipinrec.data import protocol as data_protocol
from unipinrec.data.dataset import PreparedData
from unipinrec.evaluation import catalogue, evaluate, history_baselines
from unipinrec.evaluation.popularity import popularity_ranks
from unipinrec.train.experiment import Experiment


def _ratio(numerator: float, denominator: float) -> float:
  return numerator / denominator if denominator else math.nan


def world_checks(baselines: dict, primary: str) -> dict:
  """How hard a synthetic world is, from its baselines alone (no model needed).

  Args:
    baselines: "popularity", "oracle" and "history_oracle" reports.
    primary: the retrieval figure compared ("retrieval" or "retrieval_unfiltered").
  """
  oracle = baselines["oracle"]
  history = baselines["history_oracle"]
  return {
    "oracle_hr@10": oracle[primary]["hr@10"],
    "oracle_auc_engaged_over_popularity": oracle["ranking"]["auc_engaged"]
    - baselines["popularity"]["ranking"]["auc_engaged"],
    # What the history leaves undetermined: the oracle's lead over its history estimate.
    "history_oracle_auc_engaged_gap_to_oracle": oracle["ranking"]["auc_engaged"]
    - history["ranking"]["auc_engaged"],
    "history_oracle_hr@10_over_oracle": _ratio(history[primary]["hr@10"], oracle[primary]["hr@10"]),
  }


def quality_checks(report: dict, baselines: dict, primary: str) -> dict:
  """The ratios the synthetic default is judged by, next to the raw figures.

  Args:
    report: the model's figures.
    baselines: the baselines' figures, by name.
    primary: the retrieval figure the ratios compare ("retrieval" or "retrieval_unfiltered").
  """
  model_hr = report[primary]["hr@10"]
  checks = {
    "hr@10_over_popularity": _ratio(model_hr, baselines["popularity"][primary]["hr@10"]),
  }
  if "oracle" in baselines:
    oracle = baselines["oracle"]
    checks.update(
      {
        "hr@10_over_oracle": _ratio(model_hr, oracle[primary]["hr@10"]),
        "auc_engaged_gap_to_oracle": oracle["ranking"]["auc_engaged"]
        - report["ranking"]["auc_engaged"],
        **world_checks(baselines, primary),
      }
    )
  return checks


def validation_target(experiment: Experiment) -> Callable[[Any], float] | None:
  """Parameters -> retrieval NDCG@10 on the validation targets, for early stopping.

  The figure is the data's primary one (`PreparedData.repeats.primary`): filtered, or
  unfiltered where validation targets often repeat the history. Only public logs have
  validation targets (PROTOCOL.md: model selection uses only the validation item); the
  synthetic default returns None.
  """
  valid = experiment.data.valid_examples
  if valid is None:
    return None
  names = experiment.data.logs.outcome_names
  primary = experiment.data.repeats.primary

  def target(params) -> float:
    report = evaluate.evaluate_model(
      experiment.model,
      params,
      valid.examples,
      names,
      experiment.run.eval_batch_size,
      outcome_conditions=experiment.run.step.loss.outcome_conditions,
      eval_config=experiment.run.eval,
      index_config=experiment.run.index,
    )
    return report[primary]["ndcg@10"]

  return target


def baseline_reports(
  data: PreparedData, eval_config: catalogue.EvalConfig = catalogue.DEFAULT
) -> dict[str, dict]:
  """Popularity's and the history baselines' metrics on the held-out users (ranked in
  `eval_config`'s chunks), and on synthetic data the two oracles'."""
  names = data.logs.outcome_names
  popularity = np.asarray(data.item_log_frequency)
  ranks = popularity_ranks(popularity)  # sorted once for the three baselines
  baselines = {
    "popularity": evaluate.evaluate_popularity(
      data.eval_examples,
      popularity,
      names,
      data.eval_negatives,
      data.cold_items,
      eval_config,
      item_ranks=ranks,
    ),
    **history_baselines.evaluate_history_baselines(
      data.eval_examples, popularity, data.eval_negatives, eval_config, item_ranks=ranks
    ),
  }
  if data.world is not None:
    baselines["oracle"] = evaluate.evaluate_oracle(data.world, data.eval_examples, names)
    baselines["history_oracle"] = evaluate.evaluate_history_oracle(
      data.world, data.eval_examples, names
    )
  return baselines


def _protocol_notes(data: PreparedData) -> dict:
  """How each public-data figure was computed (PROTOCOL.md), for results.json."""
  if data.eval_negatives is None:
    return {}
  return {
    "protocol": {
      "retrieval": "full catalogue, history items removed",
      "retrieval_unfiltered": "full catalogue, nothing removed",
      "retrieval_sampled": f"target among {data_protocol.SAMPLED_NEGATIVES} never-seen items "
      f"drawn with default_rng([{data_protocol.SAMPLED_SEED}, user_id])",
      "ranking": f"test target + {data_protocol.SLATE_NEGATIVES} never-seen items drawn with "
      f"default_rng([{data_protocol.SLATE_SEED}, user_id])",
      "ranking_slate_seed": data_protocol.SLATE_SEED,
    }
  }


def results_figures(
  data: PreparedData, model_report: dict, eval_config: catalogue.EvalConfig = catalogue.DEFAULT
) -> dict:
  """results.json's figures: the model's `model_report`, the baselines' (`baseline_reports`),
  the checks, and which retrieval figure is primary with the repeat shares that chose it."""
  baselines = baseline_reports(data, eval_config)
  primary = data.repeats.primary
  return {
    **model_report,
    **_protocol_notes(data),
    "primary": primary,
    "repeats": data.repeats.as_dict(),
    "baselines": baselines,
    "checks": quality_checks(model_report, baselines, primary),
  }


def evaluate_state(experiment: Experiment, params) -> dict:
  """The model's and the baselines' metrics on the held-out users, with the checks."""
  data = experiment.data
  model_report = evaluate.evaluate_model(
    experiment.model,
    params,
    data.eval_examples,
    data.logs.outcome_names,
    experiment.run.eval_batch_size,
    data.eval_negatives,
    experiment.run.step.loss.outcome_conditions,
    data.cold_items,
    experiment.run.eval,
    experiment.run.index,
  )
  return results_figures(data, model_report, experiment.run.eval)
