"""The model computations of serving, as pure functions of the parameters (jit them).

Retrieval encodes the histories and reads one query per user from the last
state, and with history features (`model.repeat_buckets`) the bias h of each
history item (`history_bias`); ranking reads the cached keys/values
(`rank_on_cache`) or encodes the histories again first (`rank_recomputed`,
what a server without the shared cache, or with a separate ranking model,
must do).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

from unipinrec.model.heads import outcome_probabilities
from unipinrec.model.unified import UniPinRec
from unipinrec.types import KVCache


@flax.struct.dataclass
class Histories:
  """Right-padded histories of a batch of users (item 0 pads)."""

  items: jax.Array  # [B, L] int32
  outcomes: jax.Array  # [B, L, O] bool
  times: jax.Array  # [B, L] float32 seconds, any origin shared within a row
  surfaces: jax.Array  # [B, L] int32
  lengths: jax.Array  # [B] int32, 0 for a user without history


def _fields(histories: Histories) -> tuple[jax.Array, ...]:
  """The histories as the positional arguments of `encode` and `encode_last`."""
  return (
    histories.items,
    histories.outcomes,
    histories.times,
    histories.surfaces,
    histories.lengths,
  )


def _encode(model: UniPinRec, params, histories: Histories) -> tuple[jax.Array, KVCache]:
  return model.apply({"params": params}, *_fields(histories), method=model.encode)


def retrieve(model: UniPinRec, keep_cache: bool = True) -> Callable:
  """fn(params, histories, [B] or [B, G] conditions) -> [B(, G), S] queries (and the cache).

  The query is read from the last history state (`encode_last`: the final
  layer runs for that position only); for an empty history it is read from
  position 0 of the all-padding history, whose attention masks every key
  (uniform weights, finite): the same query for every new user.
  """

  def fn(params, histories: Histories, conditions: jax.Array):
    last_states, cache = model.apply(
      {"params": params}, *_fields(histories), method=model.encode_last
    )
    if conditions.ndim == 2:  # several conditions per user, one state
      last_states = last_states[:, None, :]
    queries = model.apply({"params": params}, last_states, conditions, method=model.queries)
    return (queries, cache) if keep_cache else queries

  return fn


def history_bias(model: UniPinRec) -> Callable:
  """fn(params, histories) -> ([B, L] history items, each once, 0 elsewhere; [B, L, O + 1] h).

  h is the retrieval logit bias of the history items (`model.repeat_buckets`) for the query at
  the last action; every other item's is 0, so it reorders history items only.
  """

  def fn(params, histories: Histories):
    return model.apply(
      {"params": params}, histories.items, histories.lengths, method=model.history_bias
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
    _, cache = _encode(model, params, histories)
    return rank(params, cache, histories.times, candidates, request_times, request_surfaces)

  return fn
