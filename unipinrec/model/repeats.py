"""History (repeat) features of retrieval: h(a, i), a logit bias on an item the user has had.

The retrieval logit of item i for the query at history position a is
s = cosine / temperature (+ item bias) + h(a, i), with h(a, i) = 0 unless i is one
of items[: a + 1]. Otherwise, per outcome condition, h is a learned bias on
the recency of i's last occurrence there (a - its position, in T5's buckets
up to max_length), one on how often i occurred (floor(log2(count))), and
w * (s - 1 / temperature): a learned weight w moves a history item's own score
towards the highest a cosine allows (w = -1 replaces it), since the query that
finds new items orders the user's own items worse than their recency and count.
All start at zero, so the feature starts as the model without it.
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
  """The learned parameters of h: called, h of a history item from its recency, count and
  catalogue score s."""

  recency: jax.Array  # [repeat_buckets, O + 1] bias on a - last position, T5's buckets
  frequency: jax.Array  # [repeat_count_buckets, O + 1] bias on floor(log2(count))
  score_weight: jax.Array  # [O + 1] w, the weight of s - 1 / temperature
  max_distance: int = flax.struct.field(pytree_node=False)  # where the last recency bucket ends
  temperature: float = flax.struct.field(pytree_node=False)  # s's: cosine / temperature

  def __call__(self, distance: jax.Array, count: jax.Array, scores: jax.Array) -> jax.Array:
    """h, 0 where count is 0.

    Args:
      distance: [...] anchor - the item's last position.
      count: [...] its occurrences up to the anchor.
      scores: [..., Q] its catalogue score s under the first Q <= O + 1 conditions' queries.

    Returns:
      [..., Q] h per condition.
    """
    conditions = scores.shape[-1]
    recency = relative_buckets(distance, self.recency.shape[0], self.max_distance)
    # floor(log2(count)) exactly, from its bit length; a count is at most max_length.
    frequency = 31 - jax.lax.clz(jnp.maximum(count, 1).astype(jnp.int32))
    bias = jnp.take(self.recency, recency, axis=0) + jnp.take(self.frequency, frequency, axis=0)
    weighted = self.score_weight[:conditions] * (scores - 1.0 / self.temperature)
    return jnp.where((count > 0)[..., None], bias[..., :conditions] + weighted, 0.0)


class RepeatBias(nn.Module):
  """The parameters of h: `RepeatTables`, zeros at initialisation."""

  config: ModelConfig

  @nn.compact
  def __call__(self) -> RepeatTables:
    """The tables, [repeat_buckets, O + 1] and [repeat_count_buckets, O + 1], and w, [O + 1]."""
    cfg = self.config

    def table(name: str, rows: int) -> jax.Array:
      # Zeros: training starts from the model without history features.
      init = nn.with_logical_partitioning(nn.initializers.zeros, (None, "condition"))
      return self.param(name, init, (rows, cfg.num_conditions))

    weight_init = nn.with_logical_partitioning(nn.initializers.zeros, ("condition",))
    return RepeatTables(
      recency=table("recency", cfg.repeat_buckets),
      frequency=table("frequency", cfg.repeat_count_buckets),
      score_weight=self.param("score_weight", weight_init, (cfg.num_conditions,)),
      max_distance=cfg.max_length,
      temperature=cfg.temperature,
    )
