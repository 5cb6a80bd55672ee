"""Retrieval and ranking evaluation of the model and of the baselines.

Every scorer produces the same two things, so that the model, the retrieval
head used as a ranker, popularity and the oracle are measured identically:
a [U, N + 1] catalogue score per retrieval user and a [R, C, O + 1] score per
ranking candidate (column 0 "any engagement", column o + 1 outcome o).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unipinrec.data.examples import EvalExamples
from unipinrec.evaluation import metrics
from unipinrec.model.unified import UniPinRec

HISTORY_FIELDS = ("items", "outcomes", "times", "surfaces", "history_lengths")


def retrieval_report(
  catalogue_scores: np.ndarray, targets: np.ndarray, seen: Sequence[np.ndarray]
) -> dict[str, dict]:
  """The protocol's filtered (primary) and unfiltered retrieval metrics."""
  return {
    "retrieval": metrics.retrieval_metrics(metrics.target_ranks(catalogue_scores, targets, seen)),
    "retrieval_unfiltered": metrics.retrieval_metrics(
      metrics.target_ranks(catalogue_scores, targets)
    ),
  }


def ranking_report(
  candidate_scores: np.ndarray,
  expected_gain: np.ndarray,
  outcomes: np.ndarray,
  valid: np.ndarray,
  outcome_names: Sequence[str],
) -> dict[str, float]:
  """NDCG@5 of the expected gain and AUC per outcome on held-out slates.

  Args:
    candidate_scores: [R, C, O + 1]: column 0 orders engaged against none,
      column o + 1 orders outcome o against everything else.
    expected_gain: [R, C] the score the slate is sorted by for NDCG@5.
    outcomes: [R, C, O] true multi-hot outcomes.
    valid: [R, C] bool, false on padding.
    outcome_names: names of the O outcomes, least to most valuable; outcome o
      has gain o + 1 and none has gain 0.
  """
  gains = np.max(outcomes * np.arange(1, len(outcome_names) + 1), axis=-1, initial=0)
  report = {
    "ndcg@5": metrics.slate_ndcg(expected_gain, gains, valid, k=5),
    "auc_engaged": metrics.auc(candidate_scores[..., 0][valid], outcomes.any(-1)[valid]),
  }
  for index, name in enumerate(outcome_names):
    report[f"auc_{name}"] = metrics.auc(
      candidate_scores[..., index + 1][valid], outcomes[..., index][valid]
    )
  return report


def probabilities_to_candidate_scores(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[..., O] outcome probabilities -> ([..., O + 1] scores, [...] expected gain)."""
  engaged = 1.0 - np.prod(1.0 - probabilities, axis=-1, keepdims=True)
  gain = np.sum(probabilities * np.arange(1, probabilities.shape[-1] + 1), axis=-1)
  return np.concatenate([engaged, probabilities], axis=-1), gain


def _batched(
  fn: Callable, arrays: dict[str, np.ndarray], batch_size: int
) -> tuple[np.ndarray, ...]:
  """Applies `fn` (returning a tuple) over fixed-size chunks.

  The last chunk is padded to full size, so `fn` compiles once.
  """
  total = len(next(iter(arrays.values())))
  outputs = []
  for start in range(0, total, batch_size):
    chunk = {k: v[start : start + batch_size] for k, v in arrays.items()}
    size = len(next(iter(chunk.values())))
    if size < batch_size:
      chunk = {
        k: np.concatenate([v, np.repeat(v[-1:], batch_size - size, 0)]) for k, v in chunk.items()
      }
    outputs.append([np.asarray(x)[:size] for x in fn(**chunk)])
  return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def model_scorers(model: UniPinRec, params) -> tuple[Callable, Callable]:
  """Jitted (retrieval scorer, ranking scorer) of a trained model."""

  @jax.jit
  def score_catalogue(items, outcomes, times, surfaces, history_lengths):
    states, _ = model.apply(
      {"params": params}, items, outcomes, times, surfaces, history_lengths, method=model.encode
    )
    last = jnp.take_along_axis(states, jnp.maximum(history_lengths - 1, 0)[:, None, None], axis=1)
    query = model.apply(
      {"params": params}, last[:, 0], jnp.zeros(len(items), jnp.int32), method=model.queries
    )
    item_vectors = model.apply({"params": params}, method=model.item_vectors)
    return (query @ item_vectors.T / model.config.temperature,)

  @jax.jit
  def score_slates(
    items, outcomes, times, surfaces, history_lengths, slate_items, slate_times, slate_surfaces
  ):
    states, cache = model.apply(
      {"params": params}, items, outcomes, times, surfaces, history_lengths, method=model.encode
    )

    def per_candidate(x):
      return jnp.broadcast_to(x[:, None], slate_items.shape)

    logits = model.apply(
      {"params": params},
      cache,
      times,
      slate_items,
      per_candidate(slate_times),
      per_candidate(slate_surfaces),
      per_candidate(history_lengths),
      method=model.rank,
    )
    # The retrieval head as a ranker: each condition's query against the candidates.
    last = jnp.take_along_axis(states, jnp.maximum(history_lengths - 1, 0)[:, None, None], axis=1)
    conditions = jnp.arange(model.config.num_conditions)
    queries = model.apply({"params": params}, last, conditions[None, :], method=model.queries)
    item_vectors = model.apply({"params": params}, method=model.item_vectors)
    dot = jnp.einsum("bqd,bcd->bcq", queries, item_vectors[slate_items])
    return jax.nn.sigmoid(logits), dot

  return score_catalogue, score_slates


def evaluate_model(
  model: UniPinRec,
  params,
  examples: EvalExamples,
  outcome_names: Sequence[str],
  batch_size: int = 256,
) -> dict[str, dict]:
  """The model's retrieval metrics, its ranking head's, and its retrieval head's as a ranker."""
  score_catalogue, score_slates = model_scorers(model, params)
  (catalogue_scores,) = _batched(score_catalogue, examples.retrieval_history, batch_size)
  report = retrieval_report(catalogue_scores, examples.retrieval_targets, examples.retrieval_seen)
  slate_inputs = dict(
    {k: examples.ranking_history[k] for k in HISTORY_FIELDS},
    slate_items=examples.ranking_items,
    slate_times=examples.ranking_times,
    slate_surfaces=examples.ranking_surfaces,
  )
  probabilities, dot = _batched(score_slates, slate_inputs, batch_size)
  valid = examples.ranking_items > 0
  scores, gain = probabilities_to_candidate_scores(probabilities)
  report["ranking"] = ranking_report(scores, gain, examples.ranking_outcomes, valid, outcome_names)
  report["ranking_by_retrieval_head"] = ranking_report(
    dot, dot[..., 0], examples.ranking_outcomes, valid, outcome_names
  )
  return report


def evaluate_popularity(
  examples: EvalExamples, item_log_frequency: np.ndarray, outcome_names: Sequence[str]
) -> dict[str, dict]:
  """Every item scored by its share of training actions, for every outcome."""
  users = len(examples.retrieval_targets)
  report = retrieval_report(
    np.broadcast_to(item_log_frequency, (users, len(item_log_frequency))),
    examples.retrieval_targets,
    examples.retrieval_seen,
  )
  popularity = item_log_frequency[examples.ranking_items]
  scores = np.repeat(popularity[..., None], len(outcome_names) + 1, axis=-1)
  report["ranking"] = ranking_report(
    scores, popularity, examples.ranking_outcomes, examples.ranking_items > 0, outcome_names
  )
  return report


def evaluate_oracle(world, examples: EvalExamples, outcome_names: Sequence[str]) -> dict[str, dict]:
  """The synthetic world's true probabilities as the scorer (the quality ceiling)."""
  report = retrieval_report(
    world.oracle_retrieval_scores(examples.retrieval_requests),
    examples.retrieval_targets,
    examples.retrieval_seen,
  )
  probabilities = world.true_outcome_probs(examples.ranking_requests, examples.ranking_items)
  scores, gain = probabilities_to_candidate_scores(probabilities)
  report["ranking"] = ranking_report(
    scores, gain, examples.ranking_outcomes, examples.ranking_items > 0, outcome_names
  )
  return report
