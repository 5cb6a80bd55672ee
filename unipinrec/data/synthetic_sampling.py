"""Draws without replacement for the synthetic world, their inclusion probabilities, and the
logging policy's candidate pool.

The logging policy and the users draw; the oracle uses the inclusion probabilities in their place.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class PolicySettings(Protocol):
  """The `SyntheticConfig` fields the policy's pool reads (synthetic.py imports this module)."""

  policy_temperature: float  # the policy's logit per unit estimated affinity
  policy_popularity: float  # the policy's logit per unit log popularity
  policy_pool: int  # per-session candidate pool M of the relevant slots


def policy_pool(
  settings: PolicySettings, policy_interests: np.ndarray, vectors: np.ndarray, log_pop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """[L, D] -> the policy's top `policy_pool` items [L, M] and their logits [L, M]."""
  logits = settings.policy_temperature * (policy_interests @ vectors[1:].T) + (
    settings.policy_popularity * log_pop[1:]
  )
  pool = np.argpartition(-logits, settings.policy_pool - 1, axis=1)[:, : settings.policy_pool]
  return pool + 1, np.take_along_axis(logits, pool, axis=1)


def gumbel_top_k(rng: np.random.Generator, logits: np.ndarray, k: int) -> np.ndarray:
  """[U, M] logits (-inf = banned) -> [U, k] columns drawn without replacement.

  Columns of banned entries come back as -1 when a row has fewer than k
  allowed entries.
  """
  keys = logits + rng.gumbel(size=logits.shape)
  top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
  return np.where(np.isfinite(np.take_along_axis(keys, top, axis=1)), top, -1)


def sample_popular(
  rng: np.random.Generator, log_pop: np.ndarray, banned: np.ndarray, k: int
) -> np.ndarray:
  """[U, N + 1] banned mask -> [U, k] items drawn without replacement, p ∝ popularity.

  Rejection of repeated or banned draws from cheap with-replacement draws is
  exactly successive sampling; rows still short finish by Gumbel-top-k.
  """
  num_u = banned.shape[0]
  cdf = np.cumsum(np.exp(log_pop[1:] - log_pop[1:].max()))
  draws = 1 + np.searchsorted(cdf, rng.random((num_u, 4 * k)) * cdf[-1], side="right")
  draws = np.minimum(draws, len(cdf))
  earlier = np.tril(np.ones((4 * k, 4 * k), dtype=bool), -1)
  repeat = np.any((draws[:, :, None] == draws[:, None, :]) & earlier, axis=2)
  valid = ~repeat & ~np.take_along_axis(banned, draws, axis=1)
  first = np.argsort(~valid, axis=1, kind="stable")[:, :k]
  picks = np.where(np.take_along_axis(valid, first, axis=1), np.take_along_axis(draws, first, 1), 0)
  for u in np.nonzero(np.any(picks == 0, axis=1))[0]:  # rare: continue the draw exactly
    got = picks[u][picks[u] > 0]
    logits = np.where(banned[u], -np.inf, log_pop)
    logits[got] = -np.inf
    more = gumbel_top_k(rng, logits[None], k - len(got))[0]
    picks[u] = np.concatenate([got, np.maximum(more, 0)])
  return picks


def draw_slots(rng: np.random.Generator, mix: np.ndarray) -> np.ndarray:
  """[U, K] mix weights (rows sum to 1) -> [U] one slot per user, drawn by the weights."""
  below = np.cumsum(mix, axis=1) <= rng.random(mix.shape[0])[:, None]
  return np.minimum(below.sum(axis=1), np.count_nonzero(mix, axis=1) - 1)


def inclusion_probs(logits: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
  """[L, N + 1] approximate P(item among k drawn without replacement)."""
  if k == 0:
    return np.zeros(logits.shape)
  weights = np.where(allowed, np.exp(logits - np.max(logits, axis=1, keepdims=True)), 0.0)
  # Newton on the concave sum(1 - exp(-c w)) = k from below never overshoots.
  c = k / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
  for _ in range(30):
    decay = np.exp(-c * weights)
    excess = np.sum(1.0 - decay, axis=1, keepdims=True) - k
    slope = np.sum(weights * decay, axis=1, keepdims=True)
    c = c - excess / np.maximum(slope, 1e-300)
  return 1.0 - np.exp(-c * weights)


_HEAD_RANKS = 4096  # ranks whose cumulative mass is summed exactly; the tail's is integrated


def zipf_ranks(uniforms: np.ndarray, sizes: np.ndarray | int, exponent: float) -> np.ndarray:
  """[...] uniforms in [0, 1), [...] catalogue sizes n -> [...] int64 ranks in 1..n drawn with
  P(r) ∝ r ** -exponent, by the inverse CDF and without an array of size n.

  Ranks up to 4096 are exact; beyond, rank r's mass is the integral of x ** -exponent over
  [r - 1/2, r + 1/2] (the midpoint rule: relative error under 1e-7 there).
  """
  sizes = np.asarray(sizes)
  head = np.cumsum(np.arange(1.0, _HEAD_RANKS + 1.0) ** -exponent)
  low = _HEAD_RANKS + 0.5
  one_minus = 1.0 - exponent

  def tail_mass(upper: np.ndarray) -> np.ndarray:  # mass of ranks K + 1..upper
    if abs(one_minus) < 1e-9:
      return np.log(upper / low)
    return (upper**one_minus - low**one_minus) / one_minus

  def tail_point(mass: np.ndarray) -> np.ndarray:  # tail_mass's inverse
    if abs(one_minus) < 1e-9:
      return low * np.exp(mass)
    return (low**one_minus + one_minus * mass) ** (1.0 / one_minus)

  head_mass = head[np.minimum(sizes, _HEAD_RANKS) - 1]
  target = uniforms * (head_mass + tail_mass(np.maximum(sizes, _HEAD_RANKS) + 0.5))
  head_rank = np.searchsorted(head, target, side="right") + 1
  tail_rank = np.ceil(tail_point(np.maximum(target - head[-1], 0.0)) - 0.5)
  ranks = np.where(target < head_mass, head_rank, tail_rank)
  return np.clip(ranks, 1, sizes).astype(np.int64)
