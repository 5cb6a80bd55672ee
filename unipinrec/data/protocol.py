"""The protocol's evaluation rows on public data, and training slates for logs without impressions.

Public logs hold engagements only. Evaluation follows `../shared/PROTOCOL.md`:
leave-last-out targets ranked against the catalogue, the sampled-100
secondary protocol, and on ml-100k ranking slates of the test target plus 20
never-seen items. Training needs slates too, so that the ranking head learns
engaged against none: `sampled_impressions` builds them the way the
evaluation slates are built (the real next action among never-seen items).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unipinrec.data.examples import EvalExamples, history_row
from unipinrec.data.sequences import LeaveLastOut, UserSequences, to_user_logs
from unipinrec.types import UserLogs

SLATE_SEED = 20261125  # PROTOCOL.md's ranking-slate seed, printed with the results
SLATE_NEGATIVES = 20  # never-seen items beside the target in a ranking slate
SAMPLED_NEGATIVES = 100  # the secondary protocol's uniformly drawn items
SAMPLED_SEED = 20261126  # seeds the sampled-100 draws, per user


def never_seen(sequences: UserSequences, user: int) -> np.ndarray:
  """Remapped ids (ascending) of the items user `user` never interacted with."""
  seen = np.zeros(sequences.num_items + 1, dtype=bool)
  seen[0] = True
  seen[sequences.items[sequences.offsets[user] : sequences.offsets[user + 1]]] = True
  return np.flatnonzero(~seen)


def draw_never_seen(sequences: UserSequences, user: int, count: int, seed: int) -> np.ndarray:
  """`count` never-seen items drawn as PROTOCOL.md draws them.

  `default_rng([seed, original user id]).choice(C, count, replace=False)` with
  C the never-seen items' original ids in ascending order; returned remapped.
  A catalogue with fewer than `count` never-seen items (toy data only) is
  drawn with replacement, so every user still gets `count` items.
  """
  candidates = never_seen(sequences, user)  # ascending remapped = ascending original ids
  rng = np.random.default_rng([seed, int(sequences.user_ids[user])])
  replace = len(candidates) < count
  return rng.choice(candidates, count, replace=replace).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class ProtocolExamples:
  """Evaluation rows of one target (validation or test) per test user."""

  examples: EvalExamples
  sampled_negatives: np.ndarray | None  # [U, 100] never-seen items; test targets only


def protocol_examples(
  sequences: UserSequences,
  split: LeaveLastOut,
  max_length: int,
  target: str = "test",
  ranking_slates: bool = False,
) -> ProtocolExamples:
  """Leave-last-out rows: each test user's history before `target` and the target.

  Args:
    sequences: the data set's sequences.
    split: its leave-last-out split.
    max_length: the model's history length; longer histories keep their end.
    target: "test" (the last item) or "valid" (the one before it).
    ranking_slates: also build PROTOCOL.md's ranking slates (the target, then
      `SLATE_NEGATIVES` drawn never-seen items with outcome none).
  """
  if target not in ("test", "valid"):
    raise ValueError(f"target must be 'test' or 'valid', got {target!r}")
  rows = split.test_rows if target == "test" else split.valid_rows
  logs = to_user_logs(sequences)
  histories, targets, target_outcomes, seen, negatives = [], [], [], [], []
  slate_items, slate_outcomes, slate_times = [], [], []
  for user, row in zip(split.test_users, rows, strict=True):
    start = sequences.offsets[user]
    prefix = row - start
    history = history_row(logs, user, max(0, prefix - max_length), prefix, max_length)
    origin = history.pop("origin")
    histories.append(history)
    targets.append(sequences.items[row])
    target_outcomes.append(np.arange(logs.num_outcomes) == sequences.outcomes[row])
    seen.append(sequences.items[start:row])
    if target == "test":  # sampled-100 reports test figures; validation never uses it
      negatives.append(draw_never_seen(sequences, user, SAMPLED_NEGATIVES, SAMPLED_SEED))
    if ranking_slates:
      slate_items.append(
        np.concatenate(
          [[sequences.items[row]], draw_never_seen(sequences, user, SLATE_NEGATIVES, SLATE_SEED)]
        )
      )
      outcomes = np.zeros((SLATE_NEGATIVES + 1, logs.num_outcomes), bool)
      outcomes[0, sequences.outcomes[row]] = True
      slate_outcomes.append(outcomes)
      slate_times.append(np.float32(sequences.timestamps[row] - origin))
  stacked = {name: np.stack([h[name] for h in histories]) for name in histories[0]}
  num_rows = len(slate_items)
  width = SLATE_NEGATIVES + 1
  examples = EvalExamples(
    retrieval_history=stacked,
    retrieval_targets=np.asarray(targets, np.int32),
    retrieval_target_outcomes=np.asarray(target_outcomes, bool),
    retrieval_requests=np.full(len(targets), -1),
    retrieval_seen=seen,
    ranking_history=stacked if ranking_slates else {k: v[:0] for k, v in stacked.items()},
    ranking_requests=np.full(num_rows, -1),
    ranking_items=np.asarray(slate_items, np.int32).reshape(num_rows, width),
    ranking_outcomes=np.asarray(slate_outcomes, bool).reshape(num_rows, width, logs.num_outcomes),
    ranking_times=np.asarray(slate_times, np.float32),
    ranking_surfaces=np.zeros(num_rows, np.int32),
  )
  return ProtocolExamples(
    examples=examples, sampled_negatives=np.stack(negatives) if negatives else None
  )


def sampled_impressions(
  logs: UserLogs, slates_per_user: int, slate_size: int, seed: int
) -> UserLogs:
  """`logs` with slates built from its own actions, for data without impressions.

  Each slate is one real action (its outcome as logged) among `slate_size - 1`
  items the user never engaged with in `logs` (outcome none), requested just
  before that action; up to `slates_per_user` actions per user are chosen at
  random among those with history before them.
  """
  rng = np.random.default_rng([seed, 3])
  num_outcomes = logs.num_outcomes
  prefixes, times, items, outcomes, counts = [], [], [], [], []
  for user in range(logs.num_users):
    start, end = logs.action_offsets[user], logs.action_offsets[user + 1]
    chosen = np.arange(1, end - start)
    if len(chosen) > slates_per_user:
      chosen = np.sort(rng.choice(chosen, slates_per_user, replace=False))
    counts.append(len(chosen))
    if not len(chosen):
      continue
    engaged = np.zeros(logs.num_items + 1, dtype=bool)
    engaged[0] = True
    engaged[logs.action_items[start:end]] = True
    pool = np.flatnonzero(~engaged)
    negatives = pool[rng.integers(0, len(pool), (len(chosen), slate_size - 1))]
    slate = np.concatenate([logs.action_items[start + chosen][:, None], negatives], axis=1)
    slate_out = np.zeros((len(chosen), slate_size, num_outcomes), bool)
    slate_out[:, 0] = logs.action_outcomes[start + chosen]
    # The model has no position feature; shuffling keeps the target's place uninformative.
    order = np.argsort(rng.random(slate.shape), axis=1)
    items.append(np.take_along_axis(slate, order, axis=1))
    outcomes.append(np.take_along_axis(slate_out, order[..., None], axis=1))
    prefixes.append(chosen)
    times.append(logs.action_times[start + chosen] - 1)
  return dataclasses.replace(
    logs,
    slate_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    slate_prefix=np.concatenate(prefixes).astype(np.int32),
    slate_times=np.concatenate(times).astype(np.int64),
    slate_surfaces=np.zeros(sum(counts), np.int32),
    slate_items=np.concatenate(items).astype(np.int32),
    slate_outcomes=np.concatenate(outcomes),
  )
