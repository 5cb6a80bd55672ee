"""Candidate generation from the retrieval head: outcome budgets and multi-token queries.

All three generators run on a batch of users in one jitted call and score the
whole catalogue exactly (the usearch index serves the same queries at scale):
  - `generate`: one outcome-conditioned query per requested outcome, quotas
    from the budgets, look-alike queries merged, items de-duplicated;
  - `multi_token`: one encoder pass emits a query per time offset (PinRec's
    multi-token generation);
  - `autoregressive`: the baseline it replaces, one encoder pass per query,
    feeding the best new item back into the history.
The queries are `model.inference.retrieve`'s, as in evaluation and the `Recommender`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unipinrec.model import inference
from unipinrec.model.unified import UniPinRec
from unipinrec.serving import budgets as budgets_lib
from unipinrec.types import Histories

FEEDBACK_GAP_SECONDS = 60.0  # time between fed-back actions in autoregressive generation


@dataclasses.dataclass(frozen=True)
class Generated:
  """Items retrieved for a batch of users, best first within each query's share."""

  items: np.ndarray  # [B, K] item ids
  outcomes: list[list[str]]  # [B][K] the outcome each item was retrieved for


def _catalogue_scores(
  model: UniPinRec, params, queries: jax.Array, histories: Histories, exclude_seen: bool
) -> jax.Array:
  """[B, G, S] model queries -> [B, G, N + 1] scores; padding (and seen items) at -inf."""
  item_vectors = model.apply({"params": params}, method=model.item_vectors)
  scores = jnp.einsum("bgd,nd->bgn", queries, item_vectors)
  blocked = jnp.zeros((scores.shape[0], scores.shape[2]), bool).at[:, 0].set(True)
  if exclude_seen:
    valid = jnp.arange(histories.items.shape[1])[None] < histories.lengths[:, None]
    rows = jnp.arange(scores.shape[0])[:, None]
    blocked = blocked.at[rows, jnp.where(valid, histories.items, 0)].set(True)
  return jnp.where(blocked[:, None, :], -jnp.inf, scores)


@functools.cache
def _budget_generator(
  model: UniPinRec,
  conditions: tuple[int, ...],
  quotas: tuple[int, ...],
  merge_cosine: float,
  exclude_seen: bool,
):
  retrieve = inference.retrieve(model, keep_cache=False)

  @jax.jit
  def run(params, histories: Histories):
    queries = retrieve(params, histories, jnp.asarray(conditions)[None, :]).queries
    queries = budgets_lib.share_searches(queries, merge_cosine, model.config.embed_dim)
    scores = _catalogue_scores(model, params, queries, histories, exclude_seen)
    _, ranked = jax.lax.top_k(scores, sum(quotas))
    return budgets_lib.fill_quotas(ranked, quotas)

  return run


def generate(
  model: UniPinRec,
  params,
  histories: Histories,
  budgets: Mapping[str, int],
  outcome_names: Sequence[str],
  k: int | None = None,
  merge_cosine: float = 0.98,
  exclude_seen: bool = True,
) -> Generated:
  """Outcome-budgeted retrieval for a batch of users, in one jitted call.

  Args:
    model, params: a trained model.
    histories: the users' histories.
    budgets: outcome name -> weight, e.g. {"save": 3, "click": 1}.
    outcome_names: the model's outcomes, in condition order.
    k: candidates per user, split by the budgets (`split_quota`); None takes
      the budgets as counts.
    merge_cosine: outcome queries this close share one search.
    exclude_seen: never return an item of the user's history. Off, history items are scored
      without the history bias of `model.repeat_buckets` (the Recommender adds it).

  Returns:
    Exactly each outcome's quota of distinct items per user.
  """
  conditions, quotas = budgets_lib.split_quota(budgets, outcome_names, k)
  run = _budget_generator(model, conditions, quotas, float(merge_cosine), exclude_seen)
  items, groups = run(params, histories)
  names = [outcome_names[c - 1] for c in conditions]
  return Generated(
    items=np.asarray(items), outcomes=[[names[g] for g in row] for row in np.asarray(groups)]
  )


@functools.cache
def multi_token_generator(
  model: UniPinRec, num_vectors: int, k: int, merge_cosine: float | None = None
):
  """Jitted (params, histories) -> [B, T, K] items: one pass, a query per offset, condition "any".

  The T * K items are distinct: the queries take turns picking their best item
  not yet picked (`budgets.fill_quotas`), K each (a set, not T overlapping
  lists); history items are never returned. With `merge_cosine`, an offset
  query that close to an earlier one shares its ranked list, as outcome
  queries do in `generate` (PinRec's merge): the two then take turns down one
  list instead of reaching into the look-alike's.
  """
  if num_vectors > model.config.num_offsets:
    raise ValueError(
      f"{num_vectors} vectors per pass needs as many offsets; the model has "
      f"{model.config.num_offsets} ({model.config.offsets_seconds})"
    )

  total = num_vectors * k
  retrieve = inference.retrieve(model, keep_cache=False)

  @jax.jit
  def run(params, histories: Histories):
    offsets = jnp.arange(num_vectors)[None]
    queries = retrieve(params, histories, jnp.zeros_like(offsets), offsets).queries
    if merge_cosine is not None:
      queries = budgets_lib.share_searches(queries, merge_cosine, model.config.embed_dim)
    _, ranked = jax.lax.top_k(_catalogue_scores(model, params, queries, histories, True), total)
    return budgets_lib.fill_quotas(ranked, (k,) * num_vectors)[0].reshape(-1, num_vectors, k)

  return run


def _append(histories: Histories, items: jax.Array) -> Histories:
  """Appends one "any" action per row (dropping the oldest when the row is full)."""
  seq_len = histories.items.shape[1]
  lengths = histories.lengths
  full = lengths >= seq_len

  def shifted(value: jax.Array) -> jax.Array:
    return jnp.where(
      full.reshape((-1,) + (1,) * (value.ndim - 1)), jnp.roll(value, -1, axis=1), value
    )

  history_items, outcomes, times, surfaces = (
    shifted(x) for x in (histories.items, histories.outcomes, histories.times, histories.surfaces)
  )
  slot = jnp.minimum(lengths, seq_len - 1)
  previous = jnp.maximum(slot - 1, 0)
  rows = jnp.arange(len(lengths))
  last_time = jnp.take_along_axis(times, previous[:, None], axis=1)[:, 0]
  # A fed-back item is an engagement of the first (lightest) outcome.
  engaged = jnp.zeros((outcomes.shape[-1],), outcomes.dtype).at[0].set(True)
  return Histories(
    items=history_items.at[rows, slot].set(items),
    outcomes=outcomes.at[rows, slot].set(engaged),
    times=times.at[rows, slot].set(last_time + FEEDBACK_GAP_SECONDS),
    surfaces=surfaces.at[rows, slot].set(surfaces[rows, previous]),
    lengths=jnp.minimum(lengths + 1, seq_len),
  )


@functools.cache
def autoregressive_generator(model: UniPinRec, num_vectors: int, k: int):
  """Jitted (params, histories) -> [B, T, K] items: T encoder passes, each feeding back its best.

  Step t's query is the "any" query for the next action; its best item
  becomes the history's newest action before step t + 1. History items (fed
  back ones included) are never returned, and, as in `multi_token_generator`,
  the queries' K items each are picked in turns without duplicates.
  """
  total = num_vectors * k
  retrieve = inference.retrieve(model, keep_cache=False)

  @jax.jit
  def run(params, histories: Histories):
    def step(histories, _):
      queries = retrieve(params, histories, jnp.zeros((1, 1), jnp.int32)).queries
      scores = _catalogue_scores(model, params, queries, histories, True)
      _, ranked = jax.lax.top_k(scores, total)
      return _append(histories, ranked[:, 0, 0]), ranked[:, 0]

    _, ranked = jax.lax.scan(step, histories, None, length=num_vectors)
    ranked = jnp.swapaxes(ranked, 0, 1)
    return budgets_lib.fill_quotas(ranked, (k,) * num_vectors)[0].reshape(-1, num_vectors, k)

  return run
