"""The retrieval loss's history items: their bias h, and their exact softmax terms.

With history features (`model.repeat_buckets`), an item the user has had competes with the
other items they have had far more than with the catalogue. A sampled softmax draws a history
item as a negative only by chance, so h would learn "history items score high" and little of
which of them; here every anchor's history items are full candidates of its softmax instead
(`history_logsumexp`), and the negatives, sampled or the whole catalogue, leave them out
(`losses.seen_negatives`), so the denominator holds each history item exactly once, with its h.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unipinrec.model import repeats
from unipinrec.model.heads import l2_normalize

# Stands for -inf where no history item is left: finite, so no NaN reaches a gradient.
_NO_LOGIT = -1e30


def positive_history_bias(
  tables: repeats.RepeatTables, items: jax.Array, positive_items: jax.Array
) -> jax.Array:
  """[B, L, W, O + 1] h of each anchor's positives, from [B, L] history and [B, L, W] ids."""
  anchors = jnp.broadcast_to(jnp.arange(items.shape[1]), items.shape)
  last, count = repeats.occurrences(items, positive_items, anchors)
  return tables(anchors[..., None] - last, count)


def history_logsumexp(
  tables: repeats.RepeatTables,
  queries: jax.Array,
  history_vectors: jax.Array,
  items: jax.Array,
  excluded: jax.Array,
  temperature: float,
  item_bias: jax.Array | None = None,
) -> jax.Array:
  """Each anchor's log-sum-exp over its history items' logits, cosine / T (+ bias) + h.

  Anchor a's history items are the distinct ids of items[: a + 1], each at its latest
  position there, but for those in `excluded` (the anchor's positives, which the softmax
  counts once as positives).

  Args:
    tables: the history-bias tables.
    queries: [B, L, Q, D] unit queries, Q <= O + 1 (the first Q conditions).
    history_vectors: [B, L, D] the vectors of `items` (`UniPinRec.encode_items`), scored as
      unit vectors.
    items: [B, L] history item ids (0 pads).
    excluded: [B, L, W] ids each anchor leaves out (-1: none).
    temperature: logits are cosine / temperature.
    item_bias: optional [R] logit bias per item.

  Returns:
    [B, L, Q] the log-sum-exp; -1e30 (standing for -inf) where no history item is left.
  """
  length = items.shape[1]
  positions = jnp.arange(length)
  anchor, position = positions[:, None], positions[None, :]  # [A, J]: anchor a, history j
  same = items[:, :, None] == items[:, None, :]  # [B, J, K]: position k holds j's id
  after = positions[None, None, :] > positions[None, :, None]  # k > j
  next_same = jnp.min(jnp.where(same & after, positions, length), axis=2)  # [B, J]
  count = jnp.cumsum(same, axis=2, dtype=jnp.int32)  # [B, J, A]: j's id in items[: a + 1]
  count = jnp.swapaxes(count, 1, 2)  # [B, A, J]
  inside = (position <= anchor)[None] & (items > 0)[:, None, :]
  latest = next_same[:, None, :] > anchor[None]  # no later occurrence up to the anchor
  left_out = jnp.any(items[:, None, None, :] == excluded[..., None], axis=2)  # [B, A, J]
  candidate = inside & latest & ~left_out

  vectors = l2_normalize(history_vectors)  # [B, J, D]
  logits = jnp.einsum("baqd,bjd->baqj", queries, vectors) / temperature
  if item_bias is not None:
    logits = logits + jnp.take(item_bias, items)[:, None, None, :]
  h = tables(jnp.broadcast_to(anchor - position, count.shape), count)  # [B, A, J, O + 1]
  logits = logits + jnp.moveaxis(h[..., : queries.shape[2]], -1, -2)
  logits = jnp.where(candidate[:, :, None, :], logits, _NO_LOGIT)
  return jax.nn.logsumexp(logits, axis=-1)
