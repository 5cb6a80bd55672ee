"""Action tokens: one token per action, item embedding concatenated with its action.

Masked Action Modeling needs the item and its action in the same token (no
interleaving, so context length is not doubled); a masked action keeps the
item, the time and the surface and hides only the outcome.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from unipinrec.model.config import ModelConfig
from unipinrec.model.item_encoder import ItemEncoder

SESSION_GAP_SECONDS = 1800.0  # a gap under 30 minutes keeps the same session


def time_features(gap_seconds: jax.Array, has_previous: jax.Array) -> jax.Array:
  """[...] gaps since the previous action -> [..., 3] features.

  Log-minutes keep gaps from seconds to months on one scale; the session flag
  lets the model separate "same visit" from "came back".
  """
  gap = jnp.maximum(gap_seconds, 0.0)
  log_minutes = jnp.log1p(gap / 60.0) / 8.0
  same_session = (gap < SESSION_GAP_SECONDS) & has_previous
  return jnp.stack(
    [log_minutes * has_previous, same_session.astype(gap.dtype), has_previous.astype(gap.dtype)],
    axis=-1,
  )


class ActionTokenizer(nn.Module):
  """[..., W] tokens (W = D + action_dim) from items, actions, time gaps, surfaces, positions."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    # The encoder's parameters sit in this scope, so the id table stays `tokenizer/item_embedding`.
    self.item_encoder = ItemEncoder(cfg)
    nn.share_scope(self, self.item_encoder)
    # Any method call sets the encoder up now: parameters draw their init keys in creation order,
    # so the item table must come before this scope's own, as it did before the encoder.
    self.item_encoder.biases()
    self.surface_embedding = nn.Embed(
      cfg.num_surfaces,
      cfg.action_dim,
      embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(stddev=0.1), (None, "action")
      ),
    )
    self.action_projection = nn.Dense(
      cfg.action_dim,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "action")),
    )
    self.position_embedding = self.param(
      "position_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, "embed")),
      (cfg.max_length + 1, cfg.width),
    )

  def __call__(
    self,
    items: jax.Array,
    outcomes: jax.Array,
    masked: jax.Array,
    gap_seconds: jax.Array,
    has_previous: jax.Array,
    surfaces: jax.Array,
    positions: jax.Array,
  ) -> jax.Array:
    """Tokens for actions or candidates.

    Args:
      items: [...] item ids.
      outcomes: [..., O] multi-hot outcomes; ignored where `masked`.
      masked: [...] bool, the action is replaced by the [MASK] class.
      gap_seconds: [...] seconds since the previous action of the history.
      has_previous: [...] bool, false for the first action of a history.
      surfaces: [...] surface ids.
      positions: [...] position of the token in the history, 0..L.

    Returns:
      [..., W] tokens: [item vector, action features] + position.
    """
    dtype = jnp.dtype(self.config.dtype)
    visible = jnp.where(masked[..., None], 0.0, outcomes.astype(jnp.float32))
    action_inputs = jnp.concatenate(
      [visible, masked[..., None].astype(jnp.float32), time_features(gap_seconds, has_previous)],
      axis=-1,
    )
    action = self.action_projection(action_inputs) + self.surface_embedding(surfaces)
    item = self.item_encoder(items)
    # No mixing projection: the item keeps its own coordinates in the residual stream, so
    # the query (read from those coordinates) and the item table start aligned, as in
    # item2vec. A learned mix of the shared table into itself made training oscillate.
    token = jnp.concatenate([item, nn.gelu(action)], axis=-1)
    token = token + jnp.take(self.position_embedding, positions, axis=0)
    return token.astype(dtype)
