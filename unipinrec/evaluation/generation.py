"""Generation quality: outcome conditioning and budgets against the truth, multi-token against
autoregressive generation (unordered recall, diversity, generated vectors per second).

Written to WORKDIR/generation.json by `experiments.evaluate_generation`, drawn by
`experiments.plot`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from unipinrec.config import GenerationConfig
from unipinrec.data import examples as examples_lib
from unipinrec.data.dataset import PreparedData
from unipinrec.evaluation import metrics
from unipinrec.evaluation.evaluate import batched
from unipinrec.model.unified import UniPinRec
from unipinrec.serving import generation
from unipinrec.types import Histories


def _timed(fn: Callable, params, histories: Histories, batch_size: int, repeats: int):
  """(outputs, median seconds of one pass over every user), after a compiling pass."""

  def run():
    return batched(lambda h: (fn(params, h),), (histories,), batch_size)[0]

  outputs = run()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run())
    seconds.append(time.perf_counter() - start)
  return outputs, statistics.median(seconds)


def compare_tokens(
  model: UniPinRec,
  params,
  histories: Histories,
  future: np.ndarray,
  config: GenerationConfig,
  batch_size: int,
  merge_cosine: float,
) -> list[dict]:
  """Multi-token against autoregressive generation at equal numbers of query vectors.

  `merge_cosine` is serving's: offset queries this close share one search.
  """
  # Diversity compares the unit vectors only, not the item bias's column.
  item_vectors = np.asarray(model.apply({"params": params}, method=model.item_vectors))
  item_vectors = item_vectors[:, : model.config.embed_dim]
  users = len(future)
  rows = []
  merge = float(merge_cosine)
  # "multi_token" searches with every offset query; "multi_token_merged" lets look-alike
  # offset queries share one search, as serving merges outcome queries (`merge_cosine`).
  makers = (
    ("multi_token", lambda t: generation.multi_token_generator(model, t, config.k)),
    ("multi_token_merged", lambda t: generation.multi_token_generator(model, t, config.k, merge)),
    ("autoregressive", lambda t: generation.autoregressive_generator(model, t, config.k)),
  )
  for num_vectors in config.vectors:
    for method, make in makers:
      if method.startswith("multi_token") and num_vectors > model.config.num_offsets:
        logging.warning("skipping %d vectors per pass: the model has fewer offsets", num_vectors)
        continue
      lists, seconds = _timed(
        make(num_vectors), params, histories, batch_size, config.timing_repeats
      )
      row = {
        "method": method,
        "vectors": num_vectors,
        **metrics.unordered_recall(lists, future),
        **metrics.list_diversity(lists.reshape(users, -1), item_vectors, model.config.num_items),
        "vectors_per_second": users * num_vectors / seconds,
        "seconds": seconds,
      }
      logging.info("%s", row)
      rows.append(row)
  return rows


def _true_rates(world, requests: np.ndarray, items: np.ndarray) -> dict[str, float]:
  """Mean true P(click), P(save) of items at the requests, and the save share."""
  probs = world.true_outcome_probs(requests, items)
  click, save = float(probs[..., 0].mean()), float(probs[..., 1].mean())
  return {"true_click_rate": click, "true_save_rate": save, "save_share": save / (click + save)}


def conditioning_against_truth(
  model: UniPinRec,
  params,
  data: PreparedData,
  config: GenerationConfig,
  batch_size: int,
  merge_cosine: float,
) -> dict:
  """Synthetic only: true outcome rates of what each condition and budget retrieves.

  Rows are the held-out users' retrieval requests; history items are never
  retrieved. The oracle's best is the top-k by the true probability itself.
  """
  examples = data.eval_examples
  histories = Histories.from_fields(examples.retrieval_history)
  requests = examples.retrieval_requests
  names = data.logs.outcome_names
  k = config.budget_k
  report = {"k": k}
  any_lists = batched(
    lambda h: (generation.multi_token_generator(model, 1, k)(params, h),), (histories,), batch_size
  )[0][:, 0]
  report["any"] = _true_rates(data.world, requests, any_lists)
  for name in names:
    lists = generation.generate(model, params, histories, {name: k}, names, k=k).items
    report[name] = _true_rates(data.world, requests, lists)
  catalogue = np.broadcast_to(
    np.arange(1, data.logs.num_items + 1), (len(requests), data.logs.num_items)
  )
  truth = data.world.true_outcome_probs(requests, catalogue)
  seen = np.zeros(truth.shape[:2], bool)
  for row, items in enumerate(examples.retrieval_seen):
    seen[row, items - 1] = True
  report["oracle_best"] = {}
  for index, name in enumerate(names):
    scores = np.where(seen, -np.inf, truth[..., index])
    best = np.argsort(-scores, axis=1)[:, :k] + 1
    report["oracle_best"][name] = _true_rates(data.world, requests, best)
  sweep = []
  for point in range(config.budget_points):
    saves = round(k * point / (config.budget_points - 1))
    budget = {names[0]: k - saves, names[-1]: saves}
    lists = generation.generate(
      model, params, histories, budget, names, k=k, merge_cosine=merge_cosine
    ).items
    hits = (lists == examples.retrieval_targets[:, None]).any(1)
    sweep.append(
      {
        "budget": budget,
        "save_fraction": saves / k,
        **_true_rates(data.world, requests, lists),
        "hr": float(hits.mean()),
      }
    )
  report["budgets"] = sweep
  return report


def evaluate_generation(
  model: UniPinRec,
  params,
  data: PreparedData,
  config: GenerationConfig,
  eval_users: np.ndarray | None,
  batch_size: int,
  merge_cosine: float,
) -> dict:
  """Every generation figure of a trained model.

  Args:
    merge_cosine: serving's (`ServingConfig`): outcome and offset queries this close share
      one search.
    eval_users: held-out users whose actions in the last
      `config.horizon_seconds` are the future (synthetic data); None judges
      against each evaluation row's one target (public data's leave-last-out).
  """
  if eval_users is not None:
    history, future = examples_lib.generation_examples(
      data.logs, eval_users, model.config.max_length, config.horizon_seconds
    )
  else:
    history = data.eval_examples.retrieval_history
    future = data.eval_examples.retrieval_targets[:, None]
  histories = Histories.from_fields(history)
  report = {
    "config": dataclasses.asdict(config),
    "offsets_seconds": list(model.config.offsets_seconds),
    "num_users": len(future),
    "tokens": compare_tokens(model, params, histories, future, config, batch_size, merge_cosine),
  }
  if data.world is not None:
    report["conditioning"] = conditioning_against_truth(
      model, params, data, config, batch_size, merge_cosine
    )
  return report
