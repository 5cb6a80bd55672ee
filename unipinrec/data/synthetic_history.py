"""Interests estimated from histories with the synthetic world's true item vectors."""

from __future__ import annotations

import numpy as np

from unipinrec.data.synthetic import SyntheticWorld
from unipinrec.data.synthetic_behaviour import MIN_SESSION_GAP_S
from unipinrec.data.synthetic_items import normalize


def history_interests(
  world: SyntheticWorld,
  history: dict[str, np.ndarray],
  request_times: np.ndarray,
  session_decay: float = 0.4,
  action_decay: float = 0.97,
) -> np.ndarray:
  """[R, D] unit interests estimated from histories with the true item vectors.

  A weighted mean of the history's true item vectors: weight
  `session_decay ** (sessions back) * action_decay ** (actions back)`, with
  sessions split at gaps of `MIN_SESSION_GAP_S`. It is what a history-based
  model could at best know of each item, so the oracle with these interests
  in place of the true ones shows how much of the oracle's lead no model of
  the history can close. A simple estimator, not the Bayes-optimal one.

  Args:
    world: the synthetic world.
    history: `EvalExamples` history fields (`items`, `times`, `history_lengths`).
    request_times: [R] the requests' times, on the histories' time origin.
  """
  items, times, lengths = history["items"], history["times"], history["history_lengths"]
  positions = np.arange(items.shape[1])[None, :]
  inside = positions < lengths[:, None]
  gaps = np.diff(np.concatenate([times, request_times[:, None]], axis=1), axis=1)
  # Sessions back from each action to the request: gaps at or after it.
  sessions_back = np.flip(np.cumsum(np.flip(gaps >= MIN_SESSION_GAP_S, 1), 1), 1)
  weights = session_decay**sessions_back * action_decay ** (lengths[:, None] - 1 - positions)
  estimate = np.einsum("rl,rld->rd", np.where(inside, weights, 0.0), world.item_vectors[items])
  return normalize(estimate)
