"""Returns in the synthetic world: requests whose slate shows the user's earlier items again.

With `SyntheticConfig.revisit` > 0, each request of a user with earlier actions is, with that
chance, a return: its slate is up to C of the user's distinct earlier items, drawn without
replacement with weight `revisit_decay ** (actions since the item's latest) * exp(policy logit)`,
so recent and, by the policy's estimate, relevant items come back most. Other requests are the
world's usual slates, which never show an earlier item. Users engage with a return slate as
with any slate, so the outcome model stays the truth of every slate shown, and the oracle's
P(shown) is the usual slates' times 1 - revisit plus, for earlier items, revisit times their
chance to be drawn (approximated as the usual slates' draws are).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from unipinrec.data.synthetic_sampling import gumbel_top_k, inclusion_probs
from unipinrec.types import UserLogs


class ReturnSettings(Protocol):
  """The `SyntheticConfig` fields returns read (synthetic.py imports this module, not back)."""

  revisit: float  # the chance a request of a user with earlier actions is a return
  revisit_decay: float  # a return's weight per action since the item's latest
  policy_temperature: float  # the policy's logit per unit estimated affinity
  slate_size: int  # items per slate C


def check_revisit(settings: ReturnSettings) -> None:
  """Raises ValueError unless `revisit` is a chance and `revisit_decay` in (0, 1]."""
  revisit, decay = settings.revisit, settings.revisit_decay
  if not (0.0 <= revisit <= 1.0 and 0.0 < decay <= 1.0):
    raise ValueError(f"revisit={revisit} needs [0, 1] and revisit_decay={decay} (0, 1]")


def record_actions(
  history: np.ndarray, counts: np.ndarray, slate: np.ndarray, engaged: np.ndarray
) -> None:
  """Appends each user's engaged slate items, in slate order, to `history` in place.

  Args:
    history: [U, A] item ids of every user's actions so far, oldest first, 0-padded.
    counts: [U] actions already in `history`.
    slate: [U, C] the request's items.
    engaged: [U, C] bool, which of them the user engaged with.
  """
  columns = counts[:, None] + np.cumsum(engaged, axis=1) - 1
  rows = np.broadcast_to(np.arange(len(slate))[:, None], slate.shape)
  history[rows[engaged], columns[engaged]] = slate[engaged]


def earlier_actions(
  logs: UserLogs, users: np.ndarray, slate_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """[L] requests and their users -> [L, H] the items acted on before (0-padded), [L] counts."""
  lengths = logs.slate_prefix[slate_ids].astype(np.int64)
  positions = np.arange(max(int(lengths.max(initial=0)), 1))[None, :]
  inside = positions < lengths[:, None]
  rows = logs.action_offsets[users][:, None] + np.where(inside, positions, 0)
  items = logs.action_items[np.minimum(rows, len(logs.action_items) - 1)]
  return np.where(inside, items, 0), lengths


def return_logits(
  settings: ReturnSettings,
  history: np.ndarray,
  lengths: np.ndarray,
  policy_interests: np.ndarray,
  vectors: np.ndarray,
) -> np.ndarray:
  """[L, H] log weight of each earlier item at its latest action; -inf at every other column.

  Args:
    settings: the world's return settings.
    history: [L, H] earlier items, oldest first, 0-padded.
    lengths: [L] earlier actions per row.
    policy_interests: [L, D] the policy's estimate of each request's interest.
    vectors: [N + 1, D] item vectors.
  """
  width = history.shape[1]
  positions = np.arange(width)[None, :]
  back = lengths[:, None] - 1 - positions
  # Sorted by (item, position), an item's latest action is the last of its run.
  order = np.argsort(history.astype(np.int64) * width + positions, axis=1)
  items = np.take_along_axis(history, order, axis=1)
  last_of_run = np.concatenate([items[:, 1:] != items[:, :-1], np.ones_like(items[:, :1])], 1)
  latest = np.zeros(history.shape, dtype=bool)
  np.put_along_axis(latest, order, last_of_run, axis=1)
  affinity = np.einsum("ld,lhd->lh", policy_interests, vectors[history])
  logits = np.log(settings.revisit_decay) * back + settings.policy_temperature * affinity
  return np.where(latest & (back >= 0) & (history > 0), logits, -np.inf)


def draw_returns(
  rng: np.random.Generator,
  settings: ReturnSettings,
  history: np.ndarray,
  counts: np.ndarray,
  policy_interests: np.ndarray,
  vectors: np.ndarray,
) -> np.ndarray:
  """[U, C] each user's return slate, unordered and 0-padded; rows of 0 for no return.

  Args:
    rng: the returns' own stream.
    settings: the world's return settings.
    history: [U, A] every user's actions so far, oldest first, 0-padded (A >= C).
    counts: [U] actions in `history`.
    policy_interests: [U, D] the policy's estimate of the request's interest.
    vectors: [N + 1, D] item vectors.
  """
  earlier = history[:, : max(int(counts.max()), settings.slate_size)]
  logits = return_logits(settings, earlier, counts, policy_interests, vectors)
  returning = (rng.random(len(earlier)) < settings.revisit) & (counts > 0)
  drawn = gumbel_top_k(rng, logits, settings.slate_size)
  items = np.take_along_axis(earlier, np.maximum(drawn, 0), axis=1)
  return np.where(returning[:, None] & (drawn >= 0), items, 0)


def shown_with_returns(
  settings: ReturnSettings,
  shown: np.ndarray,
  history: np.ndarray,
  lengths: np.ndarray,
  policy_interests: np.ndarray,
  vectors: np.ndarray,
) -> np.ndarray:
  """[L, N + 1] P(item shown) when a request is a return with chance `revisit` (0: `shown`).

  Args:
    settings: the world's return settings.
    shown: [L, N + 1] P(shown) on the usual slate, zero on earlier items.
    history: [L, H] earlier items, oldest first, 0-padded.
    lengths: [L] earlier actions per row.
    policy_interests: [L, D] the policy's estimate of each request's interest.
    vectors: [N + 1, D] item vectors.
  """
  if not settings.revisit:
    return shown
  logits = return_logits(settings, history, lengths, policy_interests, vectors)
  allowed = np.isfinite(logits)
  # With no more distinct items than slots, a return shows them all.
  drawn = allowed.astype(np.float64)
  more = allowed.sum(axis=1) > settings.slate_size
  drawn[more] = inclusion_probs(logits[more], allowed[more], settings.slate_size)
  returning = settings.revisit * (lengths > 0)[:, None]
  mixed = (1.0 - returning) * shown
  rows = np.broadcast_to(np.arange(len(history))[:, None], history.shape)
  np.add.at(mixed, (rows, history), returning * drawn)
  return mixed
