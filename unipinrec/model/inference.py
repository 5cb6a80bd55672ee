"""One way from a history to queries and to ranked candidates, as pure functions of the parameters.

Evaluation, generation, the `Recommender` and the benchmarks all call these (jit them).
`retrieve` encodes the histories, reads the queries at each last state, keeps the user KV
cache and, with history features (`model.repeat_buckets`), the bias h of each history item;
ranking reads the cached keys/values (`rank_on_cache`) or encodes the histories again first
(`rank_recomputed`, what a server without the shared cache, or with a separate ranking model,
must do).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

from unipinrec.model.heads import outcome_probabilities
from unipinrec.model.unified import UniPinRec
from unipinrec.types import Histories, KVCache


@flax.struct.dataclass
class Retrieved:
  """What retrieval reads from a batch of histories, before any catalogue is searched."""

  queries: jax.Array  # [B, S] or [B, G, S], as the conditions asked
  cache: KVCache | None  # the user KV cache; None when not kept
  # Without `repeat_buckets` both None; else [B, L] each history item once (at its last
  # occurrence, 0 elsewhere) and [B, L, O + 1] its h per condition (0 in the empty slots).
  history_items: jax.Array | None
  history_bias: jax.Array | None


def _fields(histories: Histories) -> tuple[jax.Array, ...]:
  """The histories as the positional arguments of `encode` and `encode_last`."""
  return (
    histories.items,
    histories.outcomes,
    histories.times,
    histories.surfaces,
    histories.lengths,
  )


def retrieve(model: UniPinRec, keep_cache: bool = True) -> Callable:
  """fn(params, histories, conditions, offsets=None) -> `Retrieved`.

  Conditions are [B] (one query per user: [B, S]) or [B or 1, G] (G per user: [B, G, S]);
  `offsets`, shaped as them, ask for the action that far ahead (`model.queries`). The query
  is read from the last history state (`encode_last`: the final layer runs for that position
  only); for an empty history it is read from position 0 of the all-padding history, whose
  attention masks every key (uniform weights, finite): the same query for every new user.
  h is the retrieval logit bias of the history items for the query at the last action;
  every other item's is 0, so it reorders history items only.
  """

  def fn(
    params, histories: Histories, conditions: jax.Array, offsets: jax.Array | None = None
  ) -> Retrieved:
    variables = {"params": params}
    last_states, cache = model.apply(variables, *_fields(histories), method=model.encode_last)
    if conditions.ndim == 2:  # several conditions per user, one state
      last_states = last_states[:, None, :]
    queries = model.apply(variables, last_states, conditions, offsets, method=model.queries)
    items = bias = None
    if model.config.repeat_buckets:
      items, bias = model.apply(
        variables, histories.items, histories.lengths, method=model.history_bias
      )
    return Retrieved(
      queries=queries,
      cache=cache if keep_cache else None,
      history_items=items,
      history_bias=bias,
    )

  return fn


def rank_on_cache(model: UniPinRec) -> Callable:
  """fn(params, cache, [B, L] history times, [B, C] candidates, [B] request times, [B] surfaces)
  -> [B, C, O] outcome probabilities; every candidate sees the whole cached history."""

  def fn(params, cache: KVCache, history_times, candidates, request_times, request_surfaces):
    def per_candidate(x):
      return jnp.broadcast_to(x[:, None], candidates.shape)

    logits = model.apply(
      {"params": params},
      cache,
      history_times,
      candidates,
      per_candidate(request_times),
      per_candidate(request_surfaces),
      per_candidate(cache.lengths),
      method=model.rank,
    )
    return outcome_probabilities(logits, model.config.exclusive_outcomes)

  return fn


def rank_recomputed(model: UniPinRec) -> Callable:
  """fn(params, histories, candidates, request times, surfaces) -> `rank_on_cache`'s output,
  encoding the histories again instead of reading a cache."""
  rank = rank_on_cache(model)

  def fn(params, histories: Histories, candidates, request_times, request_surfaces):
    _, cache = model.apply({"params": params}, *_fields(histories), method=model.encode)
    return rank(params, cache, histories.times, candidates, request_times, request_surfaces)

  return fn
