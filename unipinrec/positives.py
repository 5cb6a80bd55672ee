"""Which actions of a history are each anchor's positives: later positions of the same row.

The retrieval losses' targets (`losses.sampled_softmax_loss`): the next actions within a
window, and for multi-token generation the actions at each time offset. Positions, not ids,
so a caller reads ids, outcomes or encoded vectors of the same rows with `gather_positions`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unipinrec.model.embeddings import SESSION_GAP_SECONDS


def gather_positions(values: jax.Array, positions: jax.Array) -> jax.Array:
  """[B, L, ...] per-position `values` at [B, *P] positions of the same row -> [B, *P, ...]."""
  b = values.shape[0]
  flat = positions.reshape(b, -1)
  index = flat.reshape(flat.shape + (1,) * (values.ndim - 2))
  gathered = jnp.take_along_axis(values, index, axis=1)
  return gathered.reshape(positions.shape + values.shape[2:])


def future_positives(
  items: jax.Array,
  times: jax.Array,
  lengths: jax.Array,
  window_seconds: float,
  max_positives: int,
  intra_session: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Later actions that count as positives of each anchor position.

  Args:
    items: [B, L] item ids.
    times: [B, L] seconds.
    lengths: [B] valid positions.
    window_seconds: an action within this of the anchor's time is a positive;
      the very next action always is.
    max_positives: W, how many later positions to consider.
    intra_session: also accept any later action of the anchor's session
      (PinRec's intra-session relaxation: order inside a visit is noise).

  Returns:
    ([B, L, W] positions t + k, k = 1..W, [B, L, W] bool validity).
  """
  seq_len = items.shape[1]
  anchor = jnp.arange(seq_len)[:, None]
  offsets = jnp.arange(1, max_positives + 1)[None, :]
  positions = anchor + offsets  # [L, W]
  clipped = jnp.minimum(positions, seq_len - 1)
  in_history = positions[None] < lengths[:, None, None]
  elapsed = times[:, clipped] - times[:, :, None]
  valid = in_history & ((offsets[None] == 1) | (elapsed <= window_seconds))
  if intra_session:
    gaps = jnp.diff(times, axis=1, prepend=times[:, :1])
    session = jnp.cumsum(gaps >= SESSION_GAP_SECONDS, axis=1)
    valid = valid | (in_history & (session[:, clipped] == session[:, :, None]))
  return jnp.broadcast_to(clipped, valid.shape), valid


def offset_targets(
  times: jax.Array, lengths: jax.Array, offsets_seconds: tuple[float, ...]
) -> tuple[jax.Array, jax.Array]:
  """Each anchor's target at each positive time offset (multi-token generation).

  The target at offset t > 0 is the first later action at least t seconds
  after the anchor; an anchor without one has no target there.

  Args:
    times: [B, L] seconds, non-decreasing over the valid positions.
    lengths: [B] valid positions.
    offsets_seconds: T positive offsets.

  Returns:
    ([B, L, T] target positions, [B, L, T] bool validity).
  """
  seq_len = times.shape[1]
  positions = jnp.arange(seq_len)
  later = (positions[None, :] > positions[:, None])[None] & (
    positions[None, None, :] < lengths[:, None, None]
  )  # [B, anchor, candidate]
  offsets = jnp.asarray(offsets_seconds, times.dtype)
  elapsed = times[:, None, :] - times[:, :, None]  # [B, anchor, candidate]
  reached = later[..., None] & (elapsed[..., None] >= offsets)  # [B, L, L, T]
  first = jnp.argmax(reached, axis=2)  # the first true candidate (0 when none)
  return first.astype(jnp.int32), jnp.any(reached, axis=2)


def offset_positives(
  times: jax.Array,
  lengths: jax.Array,
  offsets_seconds: tuple[float, ...],
  window_seconds: float,
  max_positives: int,
) -> tuple[jax.Array, jax.Array]:
  """Each anchor's positives at each positive time offset (windowed multi-token targets).

  Offset t's positives are its `offset_targets` target and the actions right
  after it, those at most `t + window_seconds` after the anchor: the offset's
  own window of the future, as the next-action query has the window after
  the anchor (`future_positives`). The target itself always counts.

  Args:
    times: [B, L] seconds, non-decreasing over the valid positions.
    lengths: [B] valid positions.
    offsets_seconds: T positive offsets.
    window_seconds: how far past its offset an action still counts.
    max_positives: W, positions considered per offset, the target's included.

  Returns:
    ([B, L, T, W] positions, [B, L, T, W] bool validity).
  """
  seq_len = times.shape[1]
  first, has_target = offset_targets(times, lengths, offsets_seconds)
  steps = jnp.arange(max_positives)
  positions = first[..., None] + steps  # [B, L, T, W]
  clipped = jnp.minimum(positions, seq_len - 1)
  rows = jnp.arange(times.shape[0])[:, None, None, None]
  elapsed = times[rows, clipped] - times[:, :, None, None]
  limit = jnp.asarray(offsets_seconds, times.dtype)[:, None] + window_seconds
  valid = (
    has_target[..., None]
    & (positions < lengths[:, None, None, None])
    & ((steps == 0) | (elapsed <= limit))
  )
  return clipped, valid
