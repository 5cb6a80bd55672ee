"""The synthetic world's simulated requests, step by step, laid out as `UserLogs`."""

from __future__ import annotations

import numpy as np

from unipinrec.types import UserLogs


def logs_from_requests(
  slates: np.ndarray,
  outcomes: np.ndarray,
  times: np.ndarray,
  surfaces: np.ndarray,
  prefixes: np.ndarray,
  counts: np.ndarray,
  seconds_per_position: int,
  num_items: int,
  num_surfaces: int,
  outcome_names: tuple[str, ...],
) -> UserLogs:
  """Arrays indexed [step, user, ...] as CSR logs: users back to back, requests in time order.

  Args:
    slates: [R, U, C] items shown at each step to each user.
    outcomes: [R, U, C, O] bool outcomes of the shown items.
    times: [R, U] request times.
    surfaces: [R, U] request surfaces.
    prefixes: [R, U] the user's actions before each request.
    counts: [U] each user's actions.
    seconds_per_position: an action's delay after its request per slate position (from 1).
    num_items: catalogue size N.
    num_surfaces: surfaces S.
    outcome_names: the names of the O outcomes.
  """
  num_r, num_u, num_c, num_o = outcomes.shape
  slate_items = slates.transpose(1, 0, 2).reshape(num_u * num_r, num_c)
  slate_outcomes = outcomes.transpose(1, 0, 2, 3).reshape(num_u * num_r, num_c, num_o)
  slate_times = times.T.reshape(-1)
  slate_surfaces = surfaces.T.reshape(-1)
  is_action = slate_outcomes.any(axis=-1)  # [S, C]
  rows, cols = np.nonzero(is_action)  # row-major: per user, time then position
  return UserLogs(
    action_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    action_items=slate_items[rows, cols].astype(np.int32),
    action_outcomes=slate_outcomes[rows, cols],
    action_times=slate_times[rows] + seconds_per_position * (cols + 1),
    action_surfaces=slate_surfaces[rows],
    slate_offsets=np.arange(num_u + 1, dtype=np.int64) * num_r,
    slate_prefix=prefixes.T.reshape(-1),
    slate_times=slate_times,
    slate_surfaces=slate_surfaces,
    slate_items=slate_items,
    slate_outcomes=slate_outcomes,
    num_items=num_items,
    num_surfaces=num_surfaces,
    outcome_names=outcome_names,
  )
