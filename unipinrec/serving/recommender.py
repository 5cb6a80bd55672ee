"""The `Recommender`: encode each history once, retrieve from the index, rank on the cache.

For a batch of users: one jitted call encodes the histories, keeps the user
KV cache and builds each user's outcome-conditioned query; the index returns
the top K item ids; a second jitted call ranks all K candidates of every user
at once, each attending to the cached keys/values of its user's history
(never re-encoding it). Candidates' embeddings are not recomputed: ranking
gathers their rows of the model's item table inside the jitted call, and the
retrieval score is the query's dot product with their rows of the exported
`item_vectors.npy` (memory-mapped beside the index). Both calls are `export/computations.py`'s:
jitted from the model's code, or, from a serving bundle (`serving/bundle.py`), run as the
StableHLO it was exported with.

Budgets (the generation issue's lever): a request may ask for a mix, e.g.
{"save": 3, "click": 1}; the K candidates are then split into per-outcome
quotas (`budgets.split_quota`), each outcome's query searches the index
(near-identical queries share one search, `budgets.merge_queries`), and the
quotas are filled without duplicates (`budgets.fill_quotas`) before ranking.

How the index search handles history items (`model.repeat_buckets` > 0): the
retrieval logit adds h, a learned bias on the recency and count of an item in
the user's history (`model/repeats.py`), while the index ranks by the query's
inner product only. h is 0 for every item outside the history, so the index's
order among those items is the model's. Each condition searched therefore asks
the index for K + L items (L: the model's window), so that at least K of them
are not history items however far h moves those down; the list gets the user's
distinct history items (those in the window) added, every item of it is
rescored by inner product + temperature x h (the index's units), and the K best
are kept, before quotas and ranking. Without the feature nothing is added or
rescored: history items are returned when the index finds them, and only
generation (`serving/generation.py`, `exclude_seen`) leaves them out.

Defined behaviours:
  Cold start: a user with an empty history (or whose every item is unknown)
    gets the query of the all-padding history at position 0, the same for
    every such user and condition, and candidates ranked attending only to
    themselves (prefix 0). `Recommendation.cold_start` says so.
  Item ids: requests and answers speak the data set's own ids (integers or
    strings, as `vocabulary` spells them); the model and the index speak
    internal ids 1..N. Without a vocabulary, the ids are the internal ones.
  Unknown items: history actions whose item id is not in the vocabulary are
    dropped (with a logged warning) before truncation to the model's length;
    the ids, as the request spelled them, are returned in
    `Recommendation.unknown_items`. An id of the other kind (a string for a
    vocabulary of integers, or vice versa) is a `TypeError`.
  Mismatched index: the index's manifest must name this model's step,
    configuration hash, catalogue size and width, else `IndexMismatchError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from unipinrec.config import ServingConfig
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.export.computations import Computations
from unipinrec.export.model import ServingModel
from unipinrec.index.manifest import check
from unipinrec.index.store import ItemIndex
from unipinrec.model import inference
from unipinrec.serving import budgets as budgets_lib
from unipinrec.types import Histories


@dataclasses.dataclass(frozen=True)
class UserRequest:
  """One user's history and the request to serve; A actions, oldest first."""

  user: Any  # an id echoed back in the recommendation
  items: np.ndarray  # [A] the data set's item ids (int64 or str); unknown ones are dropped
  outcomes: np.ndarray  # [A, O] bool multi-hot outcome of each action
  times: np.ndarray  # [A] float64 seconds
  surfaces: np.ndarray  # [A] int surface of each action
  request_time: float | None = None  # seconds; None = the last action's time
  request_surface: int = 0
  condition: int = 0  # retrieval condition: 0 any engagement, o + 1 outcome o
  budgets: Mapping[str, int] | None = None  # outcome name -> weight; overrides `condition`


@dataclasses.dataclass(frozen=True)
class Recommendation:
  """The ranked items of one user, best first (R = num_results)."""

  user: Any
  items: np.ndarray  # [R] the data set's item ids
  scores: np.ndarray  # [R] expected gain sum_o (o + 1) p_o, the sort key
  outcome_probabilities: np.ndarray  # [R, O]
  # [R] cosine of the query and the item (+ temperature x item bias, + temperature x h)
  retrieval_scores: np.ndarray
  retrieved_for: np.ndarray  # [R] condition whose query found the item (0 any, o + 1 outcome o)
  cold_start: bool  # no known item in the history
  unknown_items: tuple[int | str, ...]  # history ids not in the vocabulary, dropped


def _history_logits(
  candidates: np.ndarray,
  conditions: np.ndarray,
  history_items: np.ndarray,
  history_bias: np.ndarray,
) -> np.ndarray:
  """h of [R, C] candidates under [R, C] conditions: their entry of [R, L, O + 1] `history_bias`
  where they are one of the [R, L] `history_items`, else 0."""
  equal = (candidates[:, :, None] == history_items[:, None, :]) & (candidates[:, :, None] > 0)
  slot = equal.argmax(-1)  # the item's only slot in its history row
  rows = np.arange(len(candidates))[:, None]
  return np.where(equal.any(-1), history_bias[rows, slot, conditions], 0.0)


class Recommender:
  """Serves a `ServingModel` from an `ItemIndex` built from it."""

  def __init__(
    self,
    serving: ServingModel,
    index: ItemIndex,
    config: ServingConfig,
    computations: Mapping[int, Computations] | None = None,
    vocabulary: ItemVocabulary | None = None,
    surface_names: Sequence[str] = (),
  ):
    """Refuses (`IndexMismatchError`) an index whose manifest does not name this model.

    `computations` (users per call -> that call's computations) default to the model's,
    jitted, for `config.batch_size` users; a bundle passes its exported ones, one per exported
    batch size, each for `config.candidates_for(N)` candidates. `vocabulary` maps
    the data set's item ids to the model's (default: the identity on 1..N); `surface_names`
    name the surfaces a request may give by name (empty where the data name none).
    """
    check(index.manifest, serving.manifest(index.manifest.index), index.path)
    num_items = serving.model.config.num_items
    vocabulary = vocabulary or ItemVocabulary.identity(num_items)
    if len(vocabulary) != num_items:
      raise ValueError(f"a vocabulary of {len(vocabulary)} items for a model of {num_items}")
    self.serving = serving
    self.index = index
    self.config = config
    self.vocabulary = vocabulary
    self.surface_names = tuple(surface_names)
    self.num_candidates = config.candidates_for(serving.model.config.num_items)
    # Items each index search returns: with h, the window's L more than K, as h may move every
    # history item of the K found below the rest.
    history_slots = serving.model.config.max_length if serving.model.config.repeat_buckets else 0
    self.search_width = self.num_candidates + history_slots
    self._computations = dict(
      computations or {config.batch_size: Computations.jitted(serving.model)}
    )
    self.batch_sizes = tuple(sorted(self._computations))  # users per call it can make

  def recommend(self, requests: Sequence[UserRequest]) -> list[Recommendation]:
    """Recommendations for every request, in order.

    Users go in calls of the largest batch size that the rest fill; a rest smaller than
    every batch size is padded to the smallest (so 13 users with sizes 1, 4 and 8 make calls
    of 8, 4 and 1, and with size 8 alone one call of 8 and one padded call of 8).
    """
    results, start = [], 0
    while start < len(requests):
      rest = len(requests) - start
      size = max((s for s in self.batch_sizes if s <= rest), default=self.batch_sizes[0])
      results.extend(self._recommend_batch(requests[start : start + size], size))
      start += size
    return results

  def _histories(self, requests: Sequence[UserRequest], size: int):
    """Padded [size, L] histories, request times and surfaces, and the unknown ids."""
    cfg = self.serving.model.config
    length = cfg.max_length
    items = np.zeros((size, length), np.int32)
    outcomes = np.zeros((size, length, cfg.num_outcomes), bool)
    times = np.zeros((size, length), np.float32)
    surfaces = np.zeros((size, length), np.int32)
    lengths = np.zeros(size, np.int32)
    request_times = np.zeros(size, np.float32)
    request_surfaces = np.zeros(size, np.int32)
    unknown = []
    for row, request in enumerate(requests):
      internal = self.vocabulary.to_internal(request.items)
      known = np.flatnonzero(internal)
      dropped = np.delete(np.asarray(request.items), known)
      unknown.append(tuple(dropped.tolist()))  # Python ints or strs, as the request sent them
      if len(dropped):
        logging.warning(
          "user %s: %d unknown item id(s) dropped from the history", request.user, len(dropped)
        )
      kept = known[-length:]
      n = len(kept)
      request_time = request.request_time
      if request_time is None:
        request_time = float(request.times[kept[-1]]) if n else 0.0
      # Times are rebased to the first kept action: float32 keeps seconds over years only then.
      origin = float(request.times[kept[0]]) if n else request_time
      items[row, :n] = internal[kept]
      outcomes[row, :n] = np.asarray(request.outcomes)[kept]
      times[row, :n] = np.asarray(request.times, np.float64)[kept] - origin
      surfaces[row, :n] = np.asarray(request.surfaces)[kept]
      lengths[row] = n
      request_times[row] = request_time - origin
      request_surfaces[row] = request.request_surface
    histories = Histories(
      items=items, outcomes=outcomes, times=times, surfaces=surfaces, lengths=lengths
    )
    return histories, request_times, request_surfaces, unknown

  def _candidates(
    self, retrieved: inference.Retrieved, requests: Sequence[UserRequest]
  ) -> tuple[np.ndarray, np.ndarray]:
    """`retrieve`'s host copy ([B, O + 1, D] queries of every condition) -> [B, K] candidates
    and the condition of each.

    Rows without budgets (padding rows included) share one batched search. With h (the
    history items and their bias), each searched list is merged with them (`_merge_history`).
    """
    queries, items, bias = retrieved.queries, retrieved.history_items, retrieved.history_bias
    rows = np.arange(len(queries))
    conditions = np.zeros(len(queries), np.int64)
    conditions[: len(requests)] = [r.condition for r in requests]
    plain = np.array([i >= len(requests) or not requests[i].budgets for i in rows])
    candidates = np.zeros((len(queries), self.num_candidates), np.int64)
    sources = np.broadcast_to(conditions[:, None], candidates.shape).copy()
    plain_queries = queries[rows[plain], conditions[plain]]
    found = self.index.search(plain_queries, self.search_width)
    if items is not None:
      found = self._merge_history(
        found, plain_queries, conditions[plain], items[plain], bias[plain]
      )
    candidates[plain] = found
    for row in rows[~plain]:
      user_history = None if items is None else (items[row], bias[row])
      candidates[row], sources[row] = self._budget_candidates(
        queries[row], requests[row].budgets, user_history
      )
    return candidates, sources

  def _merge_history(
    self,
    lists: np.ndarray,
    queries: np.ndarray,
    conditions: np.ndarray,
    history_items: np.ndarray,
    history_bias: np.ndarray,
  ) -> np.ndarray:
    """[R, K + L] searched lists -> the K best of each list and its user's history items.

    Args:
      lists: [R, K + L] item ids from the index, best first (`search_width`).
      queries: [R, S] the query each list was searched (or is rescored) with.
      conditions: [R] that query's condition.
      history_items: [R, L] the list's user's history items, each once (0 elsewhere).
      history_bias: [R, L, O + 1] their h.

    Returns:
      [R, K] by inner product + temperature x h, best first; ties keep the index's order.
    """
    listed = (history_items[:, :, None] == lists[:, None, :]).any(-1)  # [R, L]
    merged = np.concatenate([lists, np.where(listed, 0, history_items)], axis=1)  # [R, K + L]
    scores = np.einsum("rcs,rs->rc", self.index.item_vectors[merged], queries)
    scores += self.serving.model.config.temperature * _history_logits(
      merged, np.broadcast_to(conditions[:, None], merged.shape), history_items, history_bias
    )
    scores = np.where(merged > 0, scores, -np.inf)  # item 0: an added slot left empty
    order = np.argsort(-scores, axis=1, kind="stable")[:, : self.num_candidates]
    return np.take_along_axis(merged, order, axis=1)

  def _budget_candidates(
    self,
    queries: np.ndarray,
    budgets: Mapping[str, int],
    history: tuple[np.ndarray, np.ndarray] | None,
  ) -> tuple[np.ndarray, np.ndarray]:
    """One user's [O + 1, S] queries -> K distinct candidates split by `budgets`, and sources.

    With `history` ([L] history items, [L, O + 1] their h), each condition's list is merged
    with them and rescored by that condition's query before the quotas are filled.
    """
    k = self.num_candidates
    conditions, quotas = budgets_lib.split_quota(budgets, self.serving.outcome_names, k)
    group_queries = queries[list(conditions)]  # [G, S]
    served_by = np.asarray(
      budgets_lib.merge_queries(
        jnp.asarray(group_queries)[None],
        self.config.merge_cosine,
        self.serving.model.config.embed_dim,
      )
    )[0]
    searched = sorted(set(served_by.tolist()))
    found = self.index.search(group_queries[searched], self.search_width)  # [distinct, K (+ L)]
    ranked = found[[searched.index(g) for g in served_by]]  # [G, K (+ L)]
    if history is not None:
      items, bias = (np.broadcast_to(x, (len(conditions),) + x.shape) for x in history)
      ranked = self._merge_history(ranked, group_queries, np.asarray(conditions), items, bias)
    items, groups = budgets_lib.fill_quotas(jnp.asarray(ranked)[None], quotas)
    return np.asarray(items[0]), np.asarray(conditions)[np.asarray(groups[0])]

  def _recommend_batch(self, requests: Sequence[UserRequest], size: int) -> list[Recommendation]:
    """One call of `size` users: `requests` and padding rows."""
    params = self.serving.params
    computations = self._computations[size]
    histories, request_times, request_surfaces, unknown = self._histories(requests, size)
    every_condition = np.broadcast_to(
      np.arange(self.serving.model.config.num_conditions, dtype=np.int32),
      (size, self.serving.model.config.num_conditions),
    )
    retrieved = computations.retrieve(params, histories, every_condition)
    # Every condition's [B, O + 1, D] queries: the query heads cost little next to encoding.
    host = jax.device_get(retrieved.replace(cache=None))
    candidates, sources = self._candidates(host, requests)
    probabilities = np.asarray(
      computations.rank(
        params,
        retrieved.cache,
        histories.times,
        jnp.asarray(candidates, jnp.int32),
        request_times,
        request_surfaces,
      )
    )  # [B, K, O]
    gain = probabilities @ np.arange(1, probabilities.shape[-1] + 1, dtype=np.float32)  # [B, K]
    # Stable sort: equal gains keep the index's order.
    order = np.argsort(-gain, axis=1, kind="stable")[:, : self.config.num_results]
    results = []
    for row, request in enumerate(requests):
      top = candidates[row, order[row]]
      retrieved_for = sources[row, order[row]]
      query_of_each = host.queries[row, retrieved_for]  # [R, D]
      retrieval_scores = np.sum(np.asarray(self.index.item_vectors[top]) * query_of_each, -1)
      if host.history_items is not None:
        retrieval_scores += (
          self.serving.model.config.temperature
          * _history_logits(
            top[None],
            retrieved_for[None],
            host.history_items[row][None],
            host.history_bias[row][None],
          )[0]
        )
      results.append(
        Recommendation(
          user=request.user,
          items=self.vocabulary.to_original(top),
          scores=gain[row, order[row]],
          outcome_probabilities=probabilities[row, order[row]],
          retrieval_scores=retrieval_scores,
          retrieved_for=retrieved_for,
          cold_start=bool(histories.lengths[row] == 0),
          unknown_items=unknown[row],
        )
      )
    return results
