"""History (repeat) features of retrieval: h(a, i), a logit bias on an item the user has had.

The retrieval logit of item i for the query at history position a is
cosine / temperature (+ item bias) + h(a, i), with h(a, i) = 0 unless i is one
of items[: a + 1]. Otherwise, per outcome condition, h is a learned bias on
the recency of i's last occurrence there (a - its position, in T5's buckets
up to max_length) plus one on how often i occurred (floor(log2(count))).
Both tables start at zero, so the feature starts as the model without it.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from kernels.attention import relative_buckets
from unipinrec.model.config import ModelConfig


def occurrences(
  items: jax.Array, candidates: jax.Array, anchors: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Each candidate's last position and count in its anchor's history, items[: anchor + 1].

  Args:
    items: [B, L] history item ids (0 pads).
    candidates: [B, T, K] item ids scored at T anchors (0: none, never in a history).
    anchors: [B, T] history position of each anchor; -1 for an empty history.

  Returns:
    ([B, T, K] last position, -1 where absent; [B, T, K] int32 count).
  """
  positions = jnp.arange(items.shape[1])
  hits = (
    (candidates[..., None] == items[:, None, None, :])
    & (positions <= anchors[..., None, None])
    & (candidates[..., None] > 0)
  )  # [B, T, K, L]
  last = jnp.max(jnp.where(hits, positions, -1), axis=-1)
  return last, jnp.sum(hits, axis=-1, dtype=jnp.int32)


@flax.struct.dataclass
class RepeatTables:
  """The learned tables of h, [buckets, O + 1] each; called, h from recency and count."""

  recency: jax.Array  # [repeat_buckets, O + 1] bias on a - last position, T5's buckets
  frequency: jax.Array  # [repeat_count_buckets, O + 1] bias on floor(log2(count))
  max_distance: int = flax.struct.field(pytree_node=False)  # where the last recency bucket ends

  def __call__(self, distance: jax.Array, count: jax.Array) -> jax.Array:
    """[...] anchor - last position and [...] counts -> [..., O + 1] h (0 where count is 0)."""
    recency = relative_buckets(distance, self.recency.shape[0], self.max_distance)
    # floor(log2(count)) exactly, from its bit length; a count is at most max_length.
    frequency = 31 - jax.lax.clz(jnp.maximum(count, 1).astype(jnp.int32))
    bias = jnp.take(self.recency, recency, axis=0) + jnp.take(self.frequency, frequency, axis=0)
    return jnp.where((count > 0)[..., None], bias, 0.0)


class RepeatBias(nn.Module):
  """The parameters of h: `RepeatTables`, zeros at initialisation."""

  config: ModelConfig

  @nn.compact
  def __call__(self) -> RepeatTables:
    """The tables, [repeat_buckets, O + 1] and [repeat_count_buckets, O + 1]."""
    cfg = self.config

    def table(name: str, rows: int) -> jax.Array:
      # Zeros: training starts from the model without history features.
      init = nn.with_logical_partitioning(nn.initializers.zeros, (None, "condition"))
      return self.param(name, init, (rows, cfg.num_conditions))

    return RepeatTables(
      recency=table("recency", cfg.repeat_buckets),
      frequency=table("frequency", cfg.repeat_count_buckets),
      max_distance=cfg.max_length,
    )
