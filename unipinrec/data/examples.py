"""User logs -> blended training examples and held-out evaluation examples.

A blended example is a window of up to L consecutive actions of one user plus
up to S impression slates requested inside that window, each tied to the
number of window actions before its request (`slate_prefix`). Times are
float32 seconds since the window's first action, which keeps their
precision whatever the epoch of the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from unipinrec.types import UserLogs


def split_users(
  num_users: int, holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """A seeded partition of users into (training, held-out), each sorted."""
  order = np.random.default_rng([seed, 1]).permutation(num_users)
  num_holdout = int(round(num_users * holdout_fraction))
  return np.sort(order[num_holdout:]), np.sort(order[:num_holdout])


def history_row(logs: UserLogs, user: int, start: int, end: int, max_length: int) -> dict:
  """Actions `start:end` of `user` (user-relative), right-padded to `max_length`."""
  base = logs.action_offsets[user]
  rows = slice(base + start, base + end)
  length = end - start
  num_outcomes = logs.num_outcomes
  items = np.zeros(max_length, np.int32)
  outcomes = np.zeros((max_length, num_outcomes), bool)
  times = np.zeros(max_length, np.float32)
  surfaces = np.zeros(max_length, np.int32)
  items[:length] = logs.action_items[rows]
  outcomes[:length] = logs.action_outcomes[rows]
  origin = logs.action_times[base + start] if length else 0
  times[:length] = logs.action_times[rows] - origin
  times[length:] = times[length - 1] if length else 0.0
  surfaces[:length] = logs.action_surfaces[rows]
  return {
    "items": items,
    "outcomes": outcomes,
    "times": times,
    "surfaces": surfaces,
    "history_lengths": np.int32(length),
    "origin": origin,
  }


def training_examples(
  logs: UserLogs,
  users: np.ndarray,
  max_length: int,
  max_slates: int,
  seed: int,
  window_stride: int = 0,
) -> dict[str, np.ndarray]:
  """Blended examples of the given users, as stacked fixed-shape arrays.

  Each user's actions are cut into windows of `max_length` from the most
  recent backwards, their ends `window_stride` actions apart (0: `max_length`,
  windows that do not overlap); a window keeps up to `max_slates` of the
  slates requested inside it (a seeded random choice when there are more). A
  slate needs at least one window action before it: cold-start requests have
  no history to attend to. Overlapping windows show each action and slate
  with several history prefixes and keep slates that one window's choice
  drops, without a larger step.

  Returns:
    Arrays keyed by the `TrainBatch` field names, leading dimension = examples.

  Raises:
    ValueError: on a negative `window_stride`, or when no user has a window.
  """
  if window_stride < 0:
    raise ValueError(f"data.window_stride={window_stride}; expected 0 (no overlap) or more")
  rng = np.random.default_rng([seed, 2])
  slate_size = logs.slate_items.shape[1]
  examples = []
  for user in users:
    num_actions = logs.action_offsets[user + 1] - logs.action_offsets[user]
    first_slate, last_slate = logs.slate_offsets[user], logs.slate_offsets[user + 1]
    prefixes = logs.slate_prefix[first_slate:last_slate]
    for end in range(num_actions, 1, -(window_stride or max_length)):
      start = max(0, end - max_length)
      example = history_row(logs, user, start, end, max_length)
      origin = example.pop("origin")
      inside = first_slate + np.flatnonzero((prefixes > start) & (prefixes <= end))
      if len(inside) > max_slates:
        inside = np.sort(rng.choice(inside, max_slates, replace=False))
      count = len(inside)
      slate_prefix = np.zeros(max_slates, np.int32)
      slate_times = np.zeros(max_slates, np.float32)
      slate_surfaces = np.zeros(max_slates, np.int32)
      slate_items = np.zeros((max_slates, slate_size), np.int32)
      slate_outcomes = np.zeros((max_slates, slate_size, logs.num_outcomes), bool)
      slate_prefix[:count] = logs.slate_prefix[inside] - start
      slate_times[:count] = logs.slate_times[inside] - origin
      slate_surfaces[:count] = logs.slate_surfaces[inside]
      slate_items[:count] = logs.slate_items[inside]
      slate_outcomes[:count] = logs.slate_outcomes[inside]
      example.update(
        slate_prefix=slate_prefix,
        slate_times=slate_times,
        slate_surfaces=slate_surfaces,
        slate_items=slate_items,
        slate_outcomes=slate_outcomes,
      )
      examples.append(example)
  if not examples:
    raise ValueError("no user has two or more actions: nothing to train on")
  return {name: np.stack([e[name] for e in examples]) for name in examples[0]}


@dataclasses.dataclass(frozen=True)
class EvalExamples:
  """Held-out users' retrieval targets and ranking slates, with their histories.

  Retrieval: one row per user with 3 or more actions; the target is the last
  action and the history every action before it (the protocol's
  leave-last-out). Ranking: the user's last slates, each with the history
  before its request.
  """

  retrieval_history: dict[str, np.ndarray]  # TrainBatch history fields, [U, L]
  retrieval_targets: np.ndarray  # [U] item ids
  retrieval_target_outcomes: np.ndarray  # [U, O] bool, the target action's outcomes
  retrieval_requests: np.ndarray  # [U] global slate index of the target's request
  retrieval_seen: list[np.ndarray]  # per user, every item before the target
  ranking_history: dict[str, np.ndarray]  # [R, L]
  ranking_requests: np.ndarray  # [R] global slate index
  ranking_items: np.ndarray  # [R, C]
  ranking_outcomes: np.ndarray  # [R, C, O] bool
  ranking_times: np.ndarray  # [R] float32, same origin as the row's history
  ranking_surfaces: np.ndarray  # [R]


def evaluation_examples(
  logs: UserLogs, users: np.ndarray, max_length: int, slates_per_user: int
) -> EvalExamples:
  """Protocol-style evaluation rows of the held-out users."""
  retrieval, targets, target_outcomes, target_requests, seen = [], [], [], [], []
  ranking, ranking_requests, ranking_times = [], [], []
  for user in users:
    base = logs.action_offsets[user]
    num_actions = logs.action_offsets[user + 1] - base
    first_slate, last_slate = logs.slate_offsets[user], logs.slate_offsets[user + 1]
    prefixes = logs.slate_prefix[first_slate:last_slate]
    if num_actions >= 3:
      target = num_actions - 1
      retrieval.append(history_row(logs, user, max(0, target - max_length), target, max_length))
      targets.append(logs.action_items[base + target])
      target_outcomes.append(logs.action_outcomes[base + target])
      # The target's request is the last one requested before it happened.
      target_requests.append(first_slate + np.flatnonzero(prefixes <= target)[-1])
      seen.append(logs.action_items[base : base + target])
    with_history = first_slate + np.flatnonzero(prefixes > 0)
    for request in with_history[-slates_per_user:]:
      prefix = logs.slate_prefix[request]
      row = history_row(logs, user, max(0, prefix - max_length), prefix, max_length)
      ranking_times.append(np.float32(logs.slate_times[request] - row["origin"]))
      ranking.append(row)
      ranking_requests.append(request)
  if not retrieval or not ranking:
    raise ValueError("no held-out user has enough actions to evaluate")

  def stack(rows):
    return {name: np.stack([r[name] for r in rows]) for name in rows[0] if name != "origin"}

  ranking_requests = np.asarray(ranking_requests)
  return EvalExamples(
    retrieval_history=stack(retrieval),
    retrieval_targets=np.asarray(targets, np.int32),
    retrieval_target_outcomes=np.asarray(target_outcomes, bool),
    retrieval_requests=np.asarray(target_requests),
    retrieval_seen=seen,
    ranking_history=stack(ranking),
    ranking_requests=ranking_requests,
    ranking_items=logs.slate_items[ranking_requests],
    ranking_outcomes=logs.slate_outcomes[ranking_requests],
    ranking_times=np.asarray(ranking_times, np.float32),
    ranking_surfaces=logs.slate_surfaces[ranking_requests],
  )


def generation_examples(
  logs: UserLogs, users: np.ndarray, max_length: int, horizon_seconds: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Held-out users cut `horizon_seconds` before their last action, for multi-item generation.

  The future is every action in that last window (PinRec judges generated
  sets against a time window, not the next action); the history is what
  came before. Users with fewer than 2 actions before the window are skipped.

  Returns:
    (history rows of the `TrainBatch` history fields, [U, F] future item ids,
    0-padded to the longest future).
  """
  rows, futures = [], []
  for user in users:
    begin, end = logs.action_offsets[user], logs.action_offsets[user + 1]
    times = logs.action_times[begin:end]
    cut = int(np.searchsorted(times, times[-1] - horizon_seconds, side="left"))
    if cut < 2:
      continue
    row = history_row(logs, user, max(0, cut - max_length), cut, max_length)
    row.pop("origin")
    rows.append(row)
    futures.append(logs.action_items[begin + cut : end])
  if not rows:
    raise ValueError(f"no held-out user has 2 actions before a {horizon_seconds} s window")
  history = {name: np.stack([r[name] for r in rows]) for name in rows[0]}
  future = np.zeros((len(futures), max(len(f) for f in futures)), np.int32)
  for index, items in enumerate(futures):
    future[index, : len(items)] = items
  return history, future


def item_log_frequency(logs: UserLogs, users: np.ndarray) -> np.ndarray:
  """[N + 1] log share of the users' actions per item (add-one smoothed).

  Used for log-Q correction and by the popularity baseline.
  """
  rows = np.concatenate(
    [np.arange(logs.action_offsets[u], logs.action_offsets[u + 1]) for u in users]
  )
  counts = np.bincount(logs.action_items[rows], minlength=logs.num_items + 1).astype(np.float64)
  counts[1:] += 1.0
  counts[0] = 0.0
  # In place: at 10^8 items each [N + 1] float64 temporary is 800 MB.
  counts /= counts.sum()
  with np.errstate(divide="ignore"):
    np.log(counts, out=counts)
  return counts.astype(np.float32)


def action_item_chunks(
  logs: UserLogs, users: np.ndarray, chunk_actions: int = 1 << 16
) -> Iterator[np.ndarray]:
  """The users' action item ids in log order (user by user), about `chunk_actions` at a time.

  A stream for `count_min.sketch_log_frequency`: at most one chunk (plus one user's actions)
  is in memory at once.
  """
  pending, size = [], 0
  for user in users:
    items = logs.action_items[logs.action_offsets[user] : logs.action_offsets[user + 1]]
    pending.append(items)
    size += len(items)
    if size >= chunk_actions:
      yield np.concatenate(pending)
      pending, size = [], 0
  if pending:
    yield np.concatenate(pending)
