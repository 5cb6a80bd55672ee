"""Outcome budgets: split a candidate quota across outcomes, merge look-alike queries, dedupe.

PinRec's budget lever: a request asks for, say, 3 saves and 1 click; each
requested outcome gets its own conditioned query and a share of the quota,
queries that point the same way are merged (one search serves both), and the
outcomes take turns picking their best item not yet picked, so an item found
for two outcomes is kept once and every outcome gets exactly its quota.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def split_quota(
  budgets: Mapping[str, int], outcome_names: Sequence[str], k: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Budget weights -> (condition ids, candidates per condition) summing to `k`.

  Args:
    budgets: outcome name -> non-negative weight, e.g. {"save": 3, "click": 1}.
    outcome_names: the model's outcomes; condition o + 1 asks for outcome o.
    k: total candidates; None takes the budgets as counts. Otherwise each
      outcome gets `k * weight / total`, rounded by largest remainder (ties
      to the earlier outcome in `budgets`), so the quotas sum to `k` exactly.

  Returns:
    Condition ids and quotas of the outcomes with a non-zero quota, in
    `budgets` order.
  """
  unknown = sorted(set(budgets) - set(outcome_names))
  if unknown:
    raise ValueError(
      f"unknown outcome(s) {unknown} in budgets; the model has {list(outcome_names)}"
    )
  if any(int(w) < 0 for w in budgets.values()) or sum(budgets.values()) <= 0:
    raise ValueError(f"budgets must be non-negative with a positive total, got {dict(budgets)}")
  names = list(budgets)
  weights = [int(budgets[n]) for n in names]
  total = sum(weights)
  if k is None:
    quotas = weights
  else:
    exact = [k * w / total for w in weights]
    quotas = [int(e) for e in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: k - sum(quotas)]:
      quotas[i] += 1
  kept = [(outcome_names.index(n) + 1, q) for n, q in zip(names, quotas, strict=True) if q > 0]
  return tuple(c for c, _ in kept), tuple(q for _, q in kept)


def merge_queries(
  queries: jax.Array, threshold: float, direction_dim: int | None = None
) -> jax.Array:
  """[B, G, S] model queries -> [B, G] index of the query each one is served by.

  A query whose cosine with an earlier one reaches `threshold` is served by
  the first such query (PinRec merges near-identical outcome queries); the
  others serve themselves. The cosine is that of the first `direction_dim`
  coordinates (all if None), the unit query: any after them (the item bias's
  constant 1) are the same for every query.
  """
  groups = queries.shape[1]
  direction = queries[..., :direction_dim]
  cosine = jnp.einsum("bgd,bhd->bgh", direction, direction)
  earlier_or_self = jnp.arange(groups)[None, :] <= jnp.arange(groups)[:, None]
  close = (cosine >= threshold) & earlier_or_self[None]
  return jnp.argmax(close | jnp.eye(groups, dtype=bool)[None], axis=-1)


def share_searches(queries: jax.Array, threshold: float, direction_dim: int) -> jax.Array:
  """[B, G, S] queries -> the same, each replaced by the query that serves it (`merge_queries`)."""
  served_by = merge_queries(queries, threshold, direction_dim)
  return jnp.take_along_axis(queries, served_by[..., None], axis=1)


# Compiled once per quotas and shape: the recommender calls it per request, outside any jit.
@functools.partial(jax.jit, static_argnums=1)
def fill_quotas(ranked: jax.Array, quotas: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Round-robin, duplicate-free fill: groups take turns, each picking its best unused item.

  Taking turns (rather than one group's whole quota after another's) keeps
  every group near the top of its own list: with look-alike lists, a group
  filled last would otherwise reach deep into its list, where items are
  generic rather than its own.

  Args:
    ranked: [B, G, K] each group's items, best first, K >= sum(quotas);
      every row holds K distinct items.
    quotas: G static quotas; a group whose quota is full sits out.

  Returns:
    ([B, sum(quotas)] items, [B, sum(quotas)] group of each item): group 0's
    items first, each group's in the order it picked them.
  """
  total = sum(quotas)
  width = ranked.shape[2]
  if width < total:
    raise ValueError(f"each group needs {total} ranked items, got {width}")
  turns = [g for turn in range(max(quotas)) for g, quota in enumerate(quotas) if turn < quota]
  turn_groups = jnp.asarray(turns)
  # Without the barrier XLA (CPU) fuses the top-k that produced `ranked` into
  # the loop's gathers and recomputes it every turn.
  ranked = jax.lax.optimization_barrier(ranked)

  def pick(turn, taken):
    candidates = jnp.take(ranked, turn_groups[turn], axis=1)  # [B, K]
    used = jnp.any(candidates[:, :, None] == taken[:, None, :], axis=-1)
    best = jnp.argmax(~used, axis=1)  # fewer than K items are taken, so one is unused
    return taken.at[:, turn].set(jnp.take_along_axis(candidates, best[:, None], axis=1)[:, 0])

  taken = jax.lax.fori_loop(0, total, pick, jnp.full((ranked.shape[0], total), -1, ranked.dtype))
  order = np.argsort(turns, kind="stable")
  group_of = jnp.asarray(np.asarray(turns)[order])
  return taken[:, order], jnp.broadcast_to(group_of, (ranked.shape[0], total))
