"""Retrieval and ranking evaluation of the model and of the baselines.

Every scorer produces the same two things, so that the model, the retrieval
head used as a ranker, popularity and the oracle are measured identically:
a [U, N + 1] catalogue score per retrieval user and a [R, C, O + 1] score per
ranking candidate (column 0 "any engagement", column o + 1 outcome o).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from unipinrec.data.examples import EvalExamples
from unipinrec.data.synthetic_history import history_interests
from unipinrec.errors import ConfigError
from unipinrec.evaluation import ann, catalogue, metrics, model_items
from unipinrec.evaluation import cold_items as cold_items_lib
from unipinrec.evaluation import popularity as popularity_lib
from unipinrec.evaluation.dot_blocks import ItemEncoder
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig
from unipinrec.model import inference
from unipinrec.model.unified import UniPinRec
from unipinrec.sharding import mesh_of, replicated
from unipinrec.types import Histories


def retrieval_report(
  ranks: dict[str, np.ndarray],
  targets: np.ndarray | None = None,
  cold_items: np.ndarray | None = None,
) -> dict[str, dict]:
  """The metrics of `catalogue.catalogue_ranks`' ranks; sampled-100 reports HR/NDCG@10 and MRR.

  With `cold_items` ([N + 1] bool) and the [U] `targets`, "retrieval" is also reported apart
  for the cold and the warm targets (`cold_items.cold_warm_reports`).
  """
  report = {
    name: metrics.retrieval_metrics(
      values, (10,) if name == "retrieval_sampled" else metrics.RETRIEVAL_KS
    )
    for name, values in ranks.items()
  }
  if cold_items is not None:
    report.update(cold_items_lib.cold_warm_reports(ranks["retrieval"], targets, cold_items))
  return report


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
  if len(outcome_names) >= 2:
    # The most valuable outcome against the next one, among engaged items only.
    best, other = outcome_names[-1], outcome_names[-2]
    engaged = valid & outcomes[..., -2:].any(-1)
    report[f"auc_{best}_vs_{other}"] = metrics.auc(
      candidate_scores[..., -1][engaged], outcomes[..., -1][engaged]
    )
  return report


def probabilities_to_candidate_scores(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[..., O] outcome probabilities -> ([..., O + 1] scores, [...] expected gain)."""
  engaged = metrics.engaged_probability(probabilities)[..., None]
  gain = np.sum(probabilities * np.arange(1, probabilities.shape[-1] + 1), axis=-1)
  return np.concatenate([engaged, probabilities], axis=-1), gain


def batched(fn: Callable, inputs: tuple, batch_size: int) -> tuple[np.ndarray, ...]:
  """Applies `fn` (returning a tuple) to fixed-size chunks of the rows of `inputs`.

  `inputs` are `fn`'s positional arguments, pytrees of arrays with one leading size. The last
  chunk is padded to full size, so `fn` compiles once.
  """
  total = len(jax.tree.leaves(inputs)[0])
  outputs = []
  for start in range(0, total, batch_size):
    chunk = jax.tree.map(operator.itemgetter(slice(start, start + batch_size)), inputs)
    size = min(batch_size, total - start)
    if size < batch_size:
      chunk = jax.tree.map(functools.partial(_pad_rows, batch_size), chunk)
    outputs.append([np.asarray(x)[:size] for x in fn(*chunk)])
  return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def _pad_rows(size: int, values: np.ndarray) -> np.ndarray:
  """`values` with its last row repeated up to `size` rows."""
  return np.concatenate([values, np.repeat(values[-1:], size - len(values), 0)])


@functools.cache
def model_scorers(model: UniPinRec, mesh: Mesh | None = None) -> tuple[Callable, ...]:
  """Jitted (user queries, ranking scorer) of a model, parameters first.

  Cached per model and mesh (modules compare by their config), and the
  parameters are an argument rather than a closed-over constant: repeated
  evaluations, such as validation during training, reuse one compilation.

  With the parameters' `mesh`, the outputs come back replicated: every process
  holds all of them, however the parameters are split across processes.
  """
  jit = jax.jit if mesh is None else functools.partial(jax.jit, out_shardings=replicated(mesh))
  retrieve = inference.retrieve(model)
  rank = inference.rank_on_cache(model)

  @jit
  def user_queries(params, histories: Histories, conditions):
    retrieved = retrieve(params, histories, conditions)
    if not model.config.repeat_buckets:
      return (retrieved.queries,)
    # h of the history window's items (each once; the rest add 0 to the padding column).
    bias = jnp.take_along_axis(retrieved.history_bias, conditions[:, None, None], axis=2)
    return retrieved.queries, retrieved.history_items, bias[..., 0]

  @jit
  def score_slates(params, histories: Histories, slate_items, slate_times, slate_surfaces):
    conditions = jnp.arange(model.config.num_conditions)
    retrieved = retrieve(params, histories, conditions[None, :])
    probabilities = rank(
      params, retrieved.cache, histories.times, slate_items, slate_times, slate_surfaces
    )
    # The retrieval head as a ranker: each condition's query against the candidates.
    vectors = model.apply({"params": params}, slate_items, method=model.scored_item_vectors)
    dot = jnp.einsum("bqd,bcd->bcq", retrieved.queries, vectors)
    return probabilities, dot

  return user_queries, score_slates


def catalogue_scorer(
  model: UniPinRec,
  params,
  histories: Histories,
  conditions: np.ndarray,
  batch_size: int = 256,
  items: np.ndarray | ItemEncoder | None = None,
) -> catalogue.DotScorer:
  """The model's catalogue scores of the users of `histories` under `conditions` ([U]).

  Only the queries are computed (`batch_size` users at a time); the scores are computed a
  block at a time by the scorer. `items` (`model_items.catalogue_items`) saves recomputing
  the model's item vectors or encoder.
  """
  user_queries = model_scorers(model, mesh_of(params))[0]
  if items is None:
    items = model_items.catalogue_items(model, params)
  outputs = batched(functools.partial(user_queries, params), (histories, conditions), batch_size)
  return catalogue.DotScorer(outputs[0], items, model.config.temperature, *outputs[1:])


def evaluate_model(
  model: UniPinRec,
  params,
  examples: EvalExamples,
  outcome_names: Sequence[str],
  batch_size: int = 256,
  sampled_negatives: np.ndarray | None = None,
  outcome_conditions: bool = True,
  cold_items: np.ndarray | None = None,
  eval_config: catalogue.EvalConfig = catalogue.DEFAULT,
  index_config: IndexConfig | None = None,
) -> dict[str, dict]:
  """The model's retrieval metrics, its ranking head's, and its retrieval head's as a ranker.

  Ranking is reported only when `examples` hold ranking slates. Every process
  scores every example: the figures are the same whatever the process count.
  Without `outcome_conditions` (a model that trained the "any" query alone)
  no conditioned query is read: no `retrieval_by_condition`, and the retrieval
  head ranks every outcome's column by the "any" query. With `cold_items`
  ([N + 1] bool) "retrieval" is also reported apart for cold and warm targets.
  With `eval_config.ann` the retrieval ranks come from an index of the item vectors built
  with `index_config` (`ann.ann_ranks`) and "ann" reports its recall of the exact top items.
  """
  items = model_items.catalogue_items(model, params, eval_config)
  index_config = index_config or IndexConfig()
  if eval_config.ann and isinstance(items, ItemEncoder):
    raise ConfigError(
      f"eval.ann: the item vectors ({model_items.stored_mib(model, params):.0f} MiB) exceed "
      f"eval.stored_item_vectors_mib={eval_config.stored_item_vectors_mib}, so no index of them "
      "is built here: the export path builds one"
    )
  index = store.build(items, index_config) if eval_config.ann else None

  def scorer(condition: int, subset: EvalExamples) -> catalogue.DotScorer:
    histories = Histories.from_fields(subset.retrieval_history)
    conditions = np.full(len(histories.items), condition, np.int32)
    return catalogue_scorer(model, params, histories, conditions, batch_size, items)

  def ranks_of(scores: catalogue.DotScorer, subset: EvalExamples, negatives=None) -> dict:
    targets, seen = subset.retrieval_targets, subset.retrieval_seen
    if index is None:
      num_items = model.config.num_items
      return catalogue.catalogue_ranks(scores, num_items, targets, seen, negatives, eval_config)
    ranks = ann.ann_ranks(index, index_config.exact, scores.queries, targets, seen)
    if negatives is not None:  # a hundred items per user: scored exactly
      ranks["retrieval_sampled"] = ann.drawn_ranks(scores, targets, negatives, eval_config)
    return ranks

  any_scores = scorer(0, examples)
  ranks = ranks_of(any_scores, examples, sampled_negatives)
  report = retrieval_report(ranks, examples.retrieval_targets, cold_items)
  if index is not None:
    sample = np.random.default_rng(0).permutation(len(any_scores.queries))
    sample = np.sort(sample[: eval_config.ann_recall_users])
    report["ann"] = ann.ann_recall(index, index_config, any_scores.subset(sample), eval_config)
  if outcome_conditions and len(outcome_names) > 1:
    report["retrieval_by_condition"] = _conditioning_report(
      lambda condition, subset: ranks_of(scorer(condition, subset), subset)["retrieval"],
      examples,
      ranks["retrieval"],
      outcome_names,
    )
  if not len(examples.ranking_items):
    return report
  probabilities, dot = slate_scores(model, params, examples, batch_size)
  if not outcome_conditions:
    dot = np.repeat(dot[..., :1], dot.shape[-1], axis=-1)
  valid = examples.ranking_items > 0
  scores, gain = probabilities_to_candidate_scores(probabilities)
  report["ranking"] = ranking_report(scores, gain, examples.ranking_outcomes, valid, outcome_names)
  report["ranking_by_retrieval_head"] = ranking_report(
    dot, dot[..., 0], examples.ranking_outcomes, valid, outcome_names
  )
  return report


def slate_scores(
  model: UniPinRec, params, examples: EvalExamples, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
  """The ranking slates of `examples` scored by the model.

  Returns [R, C, O] outcome probabilities (the ranking head's) and
  [R, C, O + 1] dot products of each condition's retrieval query.
  """
  score_slates = model_scorers(model, mesh_of(params))[1]
  slate_inputs = (
    Histories.from_fields(examples.ranking_history),
    examples.ranking_items,
    examples.ranking_times,
    examples.ranking_surfaces,
  )
  return batched(functools.partial(score_slates, params), slate_inputs, batch_size)


def _conditioning_report(
  ranks_of: Callable[[int, EvalExamples], np.ndarray],
  examples: EvalExamples,
  any_ranks: np.ndarray,
  outcome_names: Sequence[str],
) -> dict[str, dict]:
  """Per outcome: HR/NDCG@10 of the targets with that outcome, "any" query against its own.

  `ranks_of(condition, subset)` gives the filtered ranks of `subset`'s targets under a query.

  PinRec's outcome conditioning should find a user's next save better when
  asked for a save than when asked for any engagement.
  """
  report = {}
  for index, name in enumerate(outcome_names):
    rows = np.flatnonzero(examples.retrieval_target_outcomes[:, index])
    if not len(rows):
      continue
    subset = dataclasses.replace(
      examples,
      retrieval_history={k: v[rows] for k, v in examples.retrieval_history.items()},
      retrieval_targets=examples.retrieval_targets[rows],
      retrieval_target_outcomes=examples.retrieval_target_outcomes[rows],
      retrieval_seen=[examples.retrieval_seen[r] for r in rows],
    )
    conditioned = ranks_of(index + 1, subset)
    report[name] = {
      "num_users": len(rows),
      "any": metrics.retrieval_metrics(any_ranks[rows], (10, 50)),
      "conditioned": metrics.retrieval_metrics(conditioned, (10, 50)),
    }
  return report


def evaluate_popularity(
  examples: EvalExamples,
  item_log_frequency: np.ndarray,
  outcome_names: Sequence[str],
  sampled_negatives: np.ndarray | None = None,
  cold_items: np.ndarray | None = None,
  config: catalogue.EvalConfig = catalogue.DEFAULT,
  item_ranks: np.ndarray | None = None,
) -> dict[str, dict]:
  """Every item scored by its share of training actions, for every outcome, ranked on the
  device in `config`'s chunks; `cold_items` as `evaluate_model`'s; `item_ranks` are the
  frequencies' `popularity_ranks` where the caller has them."""
  targets, seen = examples.retrieval_targets, examples.retrieval_seen
  if item_ranks is None:
    item_ranks = popularity_lib.popularity_ranks(item_log_frequency)
  scorer = popularity_lib.popularity_scorer(item_ranks, len(targets))
  num_items = len(item_log_frequency) - 1
  ranks = catalogue.catalogue_ranks(scorer, num_items, targets, seen, sampled_negatives, config)
  report = retrieval_report(ranks, examples.retrieval_targets, cold_items)
  if not len(examples.ranking_items):
    return report
  popularity = item_log_frequency[examples.ranking_items]
  scores = np.repeat(popularity[..., None], len(outcome_names) + 1, axis=-1)
  report["ranking"] = ranking_report(
    scores, popularity, examples.ranking_outcomes, examples.ranking_items > 0, outcome_names
  )
  return report


def evaluate_history_oracle(
  world, examples: EvalExamples, outcome_names: Sequence[str]
) -> dict[str, dict]:
  """The oracle with each user's interest estimated from the history (`history_interests`).

  The gap between it and the oracle is the part of the oracle's lead that
  the history does not determine: no model of the history closes it.
  """
  return evaluate_oracle(history_oracle_world(world, examples), examples, outcome_names)


def history_oracle_world(world, examples: EvalExamples):
  """`world` with the interests of `examples`' requests estimated from their histories."""
  interests = world.request_interests.copy()
  policy = world.request_policy_interests.copy()
  retrieval_history = examples.retrieval_history
  last = np.maximum(retrieval_history["history_lengths"] - 1, 0)
  # The target's request time is not in the history: take "shortly after the last action".
  after_last = np.take_along_axis(retrieval_history["times"], last[:, None], 1)[:, 0] + 60.0
  interests[examples.retrieval_requests] = history_interests(world, retrieval_history, after_last)
  policy[examples.retrieval_requests] = interests[examples.retrieval_requests]
  interests[examples.ranking_requests] = history_interests(
    world, examples.ranking_history, examples.ranking_times
  )
  return dataclasses.replace(world, request_interests=interests, request_policy_interests=policy)


def oracle_ranks(world, examples: EvalExamples) -> dict[str, np.ndarray]:
  """The targets' ranks under the synthetic world's true retrieval scores (filtered and not)."""
  return catalogue.catalogue_ranks(
    catalogue.rows_scorer(
      lambda rows: world.oracle_retrieval_scores(examples.retrieval_requests[rows])
    ),
    world.config.num_items,
    examples.retrieval_targets,
    examples.retrieval_seen,
  )


def evaluate_oracle(world, examples: EvalExamples, outcome_names: Sequence[str]) -> dict[str, dict]:
  """The synthetic world's true probabilities as the scorer (the quality ceiling), with
  "retrieval" apart for cold and warm targets when the world has cold items."""
  ranks = oracle_ranks(world, examples)
  report = retrieval_report(ranks, examples.retrieval_targets, world.cold_items)
  probabilities = world.true_outcome_probs(examples.ranking_requests, examples.ranking_items)
  scores, gain = probabilities_to_candidate_scores(probabilities)
  report["ranking"] = ranking_report(
    scores, gain, examples.ranking_outcomes, examples.ranking_items > 0, outcome_names
  )
  return report
