"""Raw interactions -> per-user sequences, the protocol's split, and logs.

`../shared/PROTOCOL.md` fixes every choice here: one sequence per user sorted
by timestamp with ties in file order (a stable sort), every interaction kept
(repeats and duplicates included), item ids remapped to 1.. in ascending order
of the original id with 0 as padding (an `ItemVocabulary` keeps the original
ids, integers or strings), and leave-last-out: a user with 3 or more
interactions gives the last item as the test target and the one before it as
the validation target.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from unipinrec.data.interactions import DataFormatError, Interactions
from unipinrec.data.repeats import RepeatShares, repeat_shares
from unipinrec.data.vocabulary import ItemVocabulary, sorted_distinct
from unipinrec.types import UserLogs

MIN_TEST_LENGTH = 3  # the protocol's threshold for a test user


@dataclasses.dataclass(frozen=True)
class UserSequences:
  """Users back to back (CSR), each user's interactions in time order.

  User `u` (original id `user_ids[u]`) owns rows `offsets[u]:offsets[u + 1]`.
  Item ids are remapped: `item_vocabulary` gives the original id of each item 1..N.
  """

  path: str
  user_ids: np.ndarray  # [U] int64 original ids, ascending
  item_vocabulary: ItemVocabulary  # internal item ids 1..N <-> original ids, ascending
  offsets: np.ndarray  # [U + 1] int64
  items: np.ndarray  # [A] int32 remapped ids 1..N
  timestamps: np.ndarray  # [A] int64
  outcomes: np.ndarray  # [A] int32 index into outcome_names
  surfaces: np.ndarray  # [A] int32, zeros where the source has none
  lines: np.ndarray  # [A] int64 source line of each row
  outcome_names: tuple[str, ...]
  surface_names: tuple[str, ...] = ()  # what each surface index stands for, where named

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  @property
  def num_items(self) -> int:
    return len(self.item_vocabulary)

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)


def user_records(
  interactions: Interactions, item_vocabulary: ItemVocabulary
) -> Iterator[dict[str, np.ndarray]]:
  """One record per user, ascending original user id, rows in time order.

  The sort is stable: rows with equal timestamps keep their file order, and
  duplicates stay. Records hold `user` (the original id), `items` (int32 ids of
  `item_vocabulary`), `timestamps`, `outcomes`, `surfaces` (zeros when the source
  has none) and `lines`.
  """
  if len(interactions) == 0:
    raise DataFormatError(interactions.path, None, None, "no interactions")
  # lexsort's last key is the primary one: user, then time; being stable, it keeps file order.
  order = np.lexsort((interactions.timestamps, interactions.users))
  users = interactions.users[order]
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
  ends = np.r_[starts[1:], len(users)]
  surfaces = interactions.surfaces
  columns = {
    "items": item_vocabulary.to_internal(interactions.items[order]),
    "timestamps": interactions.timestamps[order].astype(np.int64, copy=False),
    "outcomes": interactions.outcomes[order].astype(np.int32, copy=False),
    "surfaces": np.zeros(len(order), np.int32) if surfaces is None else surfaces[order],
    "lines": interactions.lines[order].astype(np.int64, copy=False),
  }
  del interactions, surfaces, order  # the sorted copies replace them, once the caller lets go
  for start, end in zip(starts, ends, strict=True):
    record = {name: values[start:end] for name, values in columns.items()}
    yield {"user": np.int64(users[start]), **record}


def sequences_from_records(
  records: Iterable[Mapping[str, np.ndarray]],
  path: str,
  item_vocabulary: ItemVocabulary,
  outcome_names: Sequence[str],
  surface_names: Sequence[str] = (),
) -> UserSequences:
  """Concatenates per-user records (as `user_records` makes them with `item_vocabulary`)."""
  records = sorted(records, key=lambda r: int(r["user"]))
  if not records:
    raise DataFormatError(path, None, None, "no interactions")

  def column(name, dtype):
    return np.concatenate([np.asarray(r[name]) for r in records]).astype(dtype, copy=False)

  lengths = [len(r["items"]) for r in records]
  return UserSequences(
    path=path,
    user_ids=np.asarray([int(r["user"]) for r in records], np.int64),
    item_vocabulary=item_vocabulary,
    offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    items=column("items", np.int32),
    timestamps=column("timestamps", np.int64),
    outcomes=column("outcomes", np.int32),
    surfaces=column("surfaces", np.int32),
    lines=column("lines", np.int64),
    outcome_names=tuple(outcome_names),
    surface_names=tuple(surface_names),
  )


def build_sequences(interactions: Interactions) -> UserSequences:
  """Sorts each user's interactions by time (ties in file order) and remaps item ids."""
  vocabulary = ItemVocabulary.from_items(interactions.items)
  return sequences_from_records(
    user_records(interactions, vocabulary),
    interactions.path,
    vocabulary,
    interactions.outcome_names,
    interactions.surface_names,
  )


@dataclasses.dataclass(frozen=True)
class LeaveLastOut:
  """The protocol's split: per test user, the rows of its two targets."""

  test_users: np.ndarray  # [T] user indices with >= 3 interactions
  test_rows: np.ndarray  # [T] row of each test target (the user's last)
  valid_rows: np.ndarray  # [T] row of each validation target (second to last)

  def training_lengths(self, sequences: UserSequences) -> np.ndarray:
    """[U] interactions of each user that training may see."""
    lengths = sequences.lengths.copy()
    lengths[self.test_users] -= 2
    return lengths


def leave_last_out(sequences: UserSequences) -> LeaveLastOut:
  """Test and validation targets of every user with 3 or more interactions."""
  test_users = np.flatnonzero(sequences.lengths >= MIN_TEST_LENGTH)
  ends = sequences.offsets[test_users + 1]
  return LeaveLastOut(test_users=test_users, test_rows=ends - 1, valid_rows=ends - 2)


def target_repeats(sequences: UserSequences, split: LeaveLastOut, rows: np.ndarray) -> RepeatShares:
  """Repeat shares of the targets at `rows` (`split.test_rows` or `valid_rows`) against every
  earlier item of their user (the whole history, as the filtered protocol removes it)."""
  starts = sequences.offsets[split.test_users]
  histories = [sequences.items[s:r] for s, r in zip(starts, rows, strict=True)]
  return repeat_shares(sequences.items[rows], histories)


def split_checksum(sequences: UserSequences, split: LeaveLastOut) -> str:
  """sha256 of the (user, test item, validation item) lines, as `SPLITS.md` defines it."""
  tuples = zip(
    sequences.user_ids[split.test_users].tolist(),
    sequences.item_vocabulary.to_original(sequences.items[split.test_rows]).tolist(),
    sequences.item_vocabulary.to_original(sequences.items[split.valid_rows]).tolist(),
    strict=True,
  )
  text = "".join(f"{u}\t{t}\t{v}\n" for u, t, v in sorted(tuples))
  return hashlib.sha256(text.encode()).hexdigest()


def to_user_logs(sequences: UserSequences, lengths: np.ndarray | None = None) -> UserLogs:
  """Logs of the first `lengths[u]` interactions of each user, without impression slates.

  Public data sets record engagements only, so every interaction is an action
  whose outcome is its kind (e.g. low or high rating) and no slate is logged.
  """
  full = sequences.lengths
  lengths = full if lengths is None else np.asarray(lengths)
  starts = sequences.offsets[:-1]
  rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
  num_outcomes = len(sequences.outcome_names)
  return UserLogs(
    action_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    action_items=sequences.items[rows],
    action_outcomes=np.eye(num_outcomes, dtype=bool)[sequences.outcomes[rows]],
    action_times=sequences.timestamps[rows],
    action_surfaces=sequences.surfaces[rows],
    slate_offsets=np.zeros(sequences.num_users + 1, np.int64),
    slate_prefix=np.zeros(0, np.int32),
    slate_times=np.zeros(0, np.int64),
    slate_surfaces=np.zeros(0, np.int32),
    slate_items=np.zeros((0, 1), np.int32),
    slate_outcomes=np.zeros((0, 1, num_outcomes), bool),
    num_items=sequences.num_items,
    num_surfaces=int(sequences.surfaces.max()) + 1,
    outcome_names=sequences.outcome_names,
    surface_names=sequences.surface_names,
  )


def data_card(sequences: UserSequences, split: LeaveLastOut) -> str:
  """A one-screen summary printed at preparation."""
  lengths = sequences.lengths
  p = np.percentile(lengths, [5, 25, 50, 75, 95, 100]).astype(int)
  mix = np.bincount(sequences.outcomes, minlength=len(sequences.outcome_names)) / len(
    sequences.outcomes
  )
  span = (sequences.timestamps.max() - sequences.timestamps.min()) / 86_400
  pairs = np.repeat(np.arange(sequences.num_users), lengths) * (sequences.num_items + 1)
  repeats = len(sequences.items) - len(sorted_distinct(pairs + sequences.items))
  density = len(sequences.items) / (sequences.num_users * sequences.num_items)
  test, valid = (target_repeats(sequences, split, r) for r in (split.test_rows, split.valid_rows))
  rows = [
    f"data card: {sequences.path}",
    f"  users {sequences.num_users:,}  items {sequences.num_items:,}  "
    f"interactions {len(sequences.items):,}  density {density:.3%}",
    f"  sequence length p5 {p[0]}  p25 {p[1]}  p50 {p[2]}  p75 {p[3]}  p95 {p[4]}  max {p[5]}",
    "  outcome mix "
    + "  ".join(f"{n} {m:.1%}" for n, m in zip(sequences.outcome_names, mix, strict=True)),
    f"  repeated (user, item) pairs {repeats:,}  time span {span:,.0f} days",
    f"  targets repeating a history item: test {test.in_history:.1%} (the last item "
    f"{test.last_item:.1%})  validation {valid.in_history:.1%} (the last item "
    f"{valid.last_item:.1%})",
    f"  test users (>= {MIN_TEST_LENGTH} interactions) {len(split.test_users):,}  "
    f"split sha256 {split_checksum(sequences, split)}",
  ]
  return "\n".join(rows)
