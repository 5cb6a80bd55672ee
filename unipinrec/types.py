"""Pytrees and records shared by every stage.

Shape letters used in comments across the package:
  B batch, L history length, S slates per example, C candidates per slate,
  N catalogue size (item ids 1..N, 0 is padding), O outcomes, D width,
  H heads, K top-k, U users, A actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.struct
import jax
import numpy as np

# Item ids [...] -> [..., D] their vectors, not necessarily unit (`UniPinRec.encode_items`).
ItemVectors = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class UserLogs:
  """Every user's actions and the impression slates they were shown.

  Users are stored back to back (CSR layout): user `u` owns actions
  `action_offsets[u]:action_offsets[u + 1]` (sorted by time) and slates
  `slate_offsets[u]:slate_offsets[u + 1]` (sorted by request time).
  An action's or a slate item's outcome is a multi-hot row over
  `outcome_names`; an all-false row on a slate item means "none".
  """

  action_offsets: np.ndarray  # [U + 1] int64
  action_items: np.ndarray  # [A] int32, 1..N
  action_outcomes: np.ndarray  # [A, O] bool, at least one true per action
  action_times: np.ndarray  # [A] int64 seconds
  action_surfaces: np.ndarray  # [A] int32, 0..num_surfaces - 1
  slate_offsets: np.ndarray  # [U + 1] int64
  slate_prefix: np.ndarray  # [S] int32: the user's actions before the request
  slate_times: np.ndarray  # [S] int64 seconds of the request
  slate_surfaces: np.ndarray  # [S] int32
  slate_items: np.ndarray  # [S, C] int32, 0 pads short slates
  slate_outcomes: np.ndarray  # [S, C, O] bool
  num_items: int
  num_surfaces: int
  outcome_names: tuple[str, ...]
  surface_names: tuple[str, ...] = ()  # what each surface index stands for, where named

  @property
  def num_users(self) -> int:
    return len(self.action_offsets) - 1

  @property
  def num_outcomes(self) -> int:
    return len(self.outcome_names)


@flax.struct.dataclass
class TrainBatch:
  """A batch of blended examples: action sequences plus the slates shown.

  Sequences are right-padded: positions `>= history_lengths` hold item 0.
  Slate `s` of example `b` was requested after the first
  `slate_prefix[b, s]` actions of the sequence; its candidates may attend
  to those actions only. A slate with `slate_prefix == 0` is padding.
  """

  items: jax.Array  # [B, L] int32
  outcomes: jax.Array  # [B, L, O] bool
  times: jax.Array  # [B, L] float32 seconds since the window's first action
  surfaces: jax.Array  # [B, L] int32
  history_lengths: jax.Array  # [B] int32
  slate_prefix: jax.Array  # [B, S] int32
  slate_times: jax.Array  # [B, S] float32
  slate_surfaces: jax.Array  # [B, S] int32
  slate_items: jax.Array  # [B, S, C] int32
  slate_outcomes: jax.Array  # [B, S, C, O] bool


@flax.struct.dataclass
class KVCache:
  """Keys and values of every transformer layer for a batch of histories.

  Candidate-independent: computed once per user and reused by ranking.
  """

  keys: jax.Array  # [layers, B, L, H, D_head]
  values: jax.Array  # [layers, B, L, H, D_head]
  lengths: jax.Array  # [B] int32, valid history positions


@flax.struct.dataclass
class Histories:
  """Right-padded histories of a batch of users (item 0 pads): what retrieval and ranking read."""

  items: jax.Array  # [B, L] int32
  outcomes: jax.Array  # [B, L, O] bool
  times: jax.Array  # [B, L] float32 seconds, any origin shared within a row
  surfaces: jax.Array  # [B, L] int32
  lengths: jax.Array  # [B] int32, 0 for a user without history

  @classmethod
  def from_fields(cls, fields: Mapping[str, np.ndarray]) -> Histories:
    """From a dict of the `TrainBatch` history fields (the histories of `EvalExamples`)."""
    return cls(
      items=fields["items"],
      outcomes=fields["outcomes"],
      times=fields["times"],
      surfaces=fields["surfaces"],
      lengths=fields["history_lengths"],
    )
