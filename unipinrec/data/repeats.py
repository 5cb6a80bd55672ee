"""How often users come back to an item: the shares of targets that repeat their history.

PROTOCOL.md's filtered figure removes the user's history from the candidates but never the
target; where targets often repeat a history item, that leaves the target alone among them,
and the unfiltered figure becomes the primary one. `Repeats` holds the shares and the choice,
made on targets that model selection may see (validation), never on the test targets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from unipinrec.types import UserLogs

FILTERED = "retrieval"  # results.json's key of the filtered figure
UNFILTERED = "retrieval_unfiltered"  # and of the unfiltered one


@dataclasses.dataclass(frozen=True)
class RepeatShares:
  """Of `num_targets` targets, the shares that repeat the user's history before them."""

  in_history: float  # the target is an item of the history
  last_item: float  # the target is the history's last item
  num_targets: int

  def as_dict(self) -> dict:
    """The shares as results.json writes them."""
    return {
      "target_in_history": self.in_history,
      "target_is_last_item": self.last_item,
      "num_targets": self.num_targets,
    }


def repeat_shares(targets: np.ndarray, histories: Sequence[np.ndarray]) -> RepeatShares:
  """The repeat shares of `targets[u]` against `histories[u]`, every item before it in order."""
  targets = np.asarray(targets, np.int64)
  lengths = np.asarray([len(h) for h in histories], np.int64)
  owner = np.repeat(np.arange(len(targets)), lengths)
  flat = np.concatenate([np.zeros(0, np.int64), *histories]).astype(np.int64)
  in_history = np.bincount(owner, weights=flat == targets[owner], minlength=len(targets)) > 0
  last = np.zeros(len(targets), np.int64)  # 0 is padding: no target equals it
  last[lengths > 0] = flat[np.cumsum(lengths)[lengths > 0] - 1]
  count = max(len(targets), 1)  # no targets: shares of 0, not NaN
  return RepeatShares(
    in_history=float(in_history.sum() / count),
    last_item=float(np.sum(last == targets) / count),
    num_targets=len(targets),
  )


def last_action_shares(logs: UserLogs, users: np.ndarray, min_actions: int) -> RepeatShares:
  """The repeat shares of the last action of each of `users` with `min_actions` or more."""
  ends = logs.action_offsets[np.asarray(users) + 1]
  starts = logs.action_offsets[np.asarray(users)]
  kept = ends - starts >= min_actions
  histories = [logs.action_items[s : e - 1] for s, e in zip(starts[kept], ends[kept], strict=True)]
  return repeat_shares(logs.action_items[ends[kept] - 1], histories)


@dataclasses.dataclass(frozen=True)
class Repeats:
  """The test targets' repeat shares, those the primary figure is chosen on, and the choice."""

  test: RepeatShares
  selection: RepeatShares  # validation targets (public logs) or training users' last actions
  selection_targets: str  # which targets `selection` counts, in words
  threshold: float  # `DataConfig.repeat_threshold`

  @property
  def primary(self) -> str:
    """The results.json key of the primary retrieval figure (PROTOCOL.md)."""
    return UNFILTERED if self.selection.in_history >= self.threshold else FILTERED

  def as_dict(self) -> dict:
    """results.json's `repeats`."""
    return {
      "test": self.test.as_dict(),
      "selection": self.selection.as_dict(),
      "selection_targets": self.selection_targets,
      "threshold": self.threshold,
    }

  def describe(self) -> str:
    """One log line: the primary figure and the shares that chose it."""
    reached = ">=" if self.primary == UNFILTERED else "<"
    return (
      f"primary retrieval figure {self.primary}: {self.selection_targets} repeat a history item "
      f"at {self.selection.in_history:.1%} {reached} data.repeat_threshold {self.threshold:.0%} "
      f"(test targets {self.test.in_history:.1%})"
    )
