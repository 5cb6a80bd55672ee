"""The synthetic users: their interests, how they move between sessions, and how they respond.

Shared by the world with item tables (synthetic.py) and the one with items computed from their
ids (synthetic_at_scale.py), so both simulate the same users with the same outcome model.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from unipinrec.data.synthetic_items import normalize

MIN_SESSION_GAP_S = 3600  # sessions are at least this far apart; requests inside one are closer


class BehaviourSettings(Protocol):
  """The `SyntheticConfig` fields users read (synthetic.py imports this module, not back)."""

  num_topics: int  # topic centres T
  max_user_topics: int  # a user starts as a mix of 1..this many topics
  user_offset: float  # scale of the personal offset from the topic mix
  drift: float  # per-session random-walk step of the interest
  jump_prob: float  # per-session chance of jumping to a new topic
  jump_strength: float  # weight of the new topic centre in a jump
  within_session_gap_s: float  # mean extra seconds between requests
  between_session_gap_s: float  # mean seconds between sessions
  seconds_per_position: int  # an action's delay per slate position
  slate_size: int  # items per slate C
  num_surfaces: int  # request surfaces
  surface_shift: float  # surfaces shift engagement logits in [-s, s]
  position_bias: float  # examination at position p is (1 + p) ** -this
  engage_bias: float  # engagement logit intercept
  engage_affinity: float  # engagement logit per unit true affinity
  engage_popularity: float  # engagement logit per unit log popularity
  engage_quality: float  # engagement logit per unit quality
  save_bias: float  # save-given-engaged logit intercept
  save_quality: float  # save logit per unit quality
  save_affinity: float  # save logit per unit true affinity


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def examination(config: BehaviourSettings) -> np.ndarray:
  """[C] probability that each slate position is examined."""
  return (1.0 + np.arange(config.slate_size)) ** -config.position_bias


def surface_shifts(config: BehaviourSettings) -> np.ndarray:
  """[num_surfaces] each surface's shift of the engagement logit."""
  if config.num_surfaces == 1:
    return np.zeros(1)
  return config.surface_shift * np.linspace(-1.0, 1.0, config.num_surfaces)


def outcome_probs(
  cfg: BehaviourSettings,
  interests: np.ndarray,
  vectors: np.ndarray,
  log_pop: np.ndarray,
  quality: np.ndarray,
  surfaces: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
  """The single definition of user behaviour: generation samples from it and the truth
  accessors report it.

  Args:
    cfg: the world's knobs.
    interests: [L, D] the users' true interests.
    vectors, log_pop, quality: [L, C, D], [L, C], [L, C] the shown items' truth.
    surfaces: [L] the requests' surfaces.

  Returns:
    P(engage | examined), P(save | engaged), [L, C] each.
  """
  affinity = np.einsum("ld,lcd->lc", interests, vectors)
  engage = _sigmoid(
    cfg.engage_bias
    + cfg.engage_affinity * affinity
    + cfg.engage_popularity * log_pop
    + cfg.engage_quality * quality
    + surface_shifts(cfg)[surfaces][:, None]
  )
  save = _sigmoid(cfg.save_bias + cfg.save_quality * quality + cfg.save_affinity * affinity)
  return engage, save


def draw_interests(
  rng: np.random.Generator, cfg: BehaviourSettings, centres: np.ndarray, num_users: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Users as a Dirichlet mix of 1..max_user_topics topic centres plus a personal offset.

  Returns:
    [U, K] mix weights, [U, K] their topics, [U, D] unit interests.
  """
  num_topics_u = rng.integers(1, cfg.max_user_topics + 1, num_users)
  mix = rng.dirichlet(np.ones(cfg.max_user_topics), num_users)
  mix[np.arange(cfg.max_user_topics)[None, :] >= num_topics_u[:, None]] = 0.0
  mix /= mix.sum(axis=1, keepdims=True)
  user_topics = rng.integers(0, cfg.num_topics, (num_users, cfg.max_user_topics))
  interest = np.einsum("ut,utd->ud", mix, centres[user_topics])
  dim = centres.shape[1]
  offset = cfg.user_offset * rng.standard_normal((num_users, dim)) / np.sqrt(dim)
  return mix, user_topics, normalize(interest + offset)


def next_request_times(
  rng: np.random.Generator, cfg: BehaviourSettings, now: np.ndarray, new_session: np.ndarray
) -> np.ndarray:
  """[U] times of the users' next requests: a session gap or a gap inside the session."""
  min_gap = cfg.seconds_per_position * (cfg.slate_size + 1)  # actions end before the next request
  gap_between = MIN_SESSION_GAP_S + rng.exponential(cfg.between_session_gap_s, len(now))
  gap_within = min_gap + rng.exponential(cfg.within_session_gap_s, len(now))
  return now + np.where(new_session, gap_between, gap_within).astype(np.int64)


def move_interests(
  rng: np.random.Generator,
  cfg: BehaviourSettings,
  centres: np.ndarray,
  interest: np.ndarray,
  new_session: np.ndarray,
) -> np.ndarray:
  """[U, D] interests after a step: a new session drifts and may jump towards a topic."""
  num_u, dim = interest.shape
  step = cfg.drift * rng.standard_normal((num_u, dim)) / np.sqrt(dim)
  drifted = normalize(interest + step)
  jump_to = centres[rng.integers(0, cfg.num_topics, num_u)]
  jumped = normalize((1.0 - cfg.jump_strength) * drifted + cfg.jump_strength * jump_to)
  jump = new_session & (rng.random(num_u) < cfg.jump_prob)
  return np.where(new_session[:, None], np.where(jump[:, None], jumped, drifted), interest)


def request_surfaces(
  rng: np.random.Generator, cfg: BehaviourSettings, session_surface: np.ndarray
) -> np.ndarray:
  """[U] the requests' surfaces: mostly their session's, sometimes any."""
  num_u = len(session_surface)
  return np.where(
    rng.random(num_u) < 0.8, session_surface, rng.integers(0, cfg.num_surfaces, num_u)
  )
