"""The shared causal transformer: history -> states and the user KV cache.

Candidates (slate items in training, retrieved items in serving) never enter
the history: at every layer each candidate attends to the cached keys/values
of the history prefix it was requested after, and to itself, never to other
candidates (the M-FALCON pattern). Training and serving share that code path,
so ranking on the cache is exactly what training optimised.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from unipinrec import sharding
from unipinrec.model.config import ModelConfig
from unipinrec.types import KVCache


def _partitioned(init, names):
  return nn.with_logical_partitioning(init, names)


def _batch_sharded(x: jax.Array) -> jax.Array:
  """[B, T, W] activations split over the batch, whole along T and W.

  Keeps the residual stream data-parallel even where an input (the
  vocabulary-split item table) pulls another way.
  """
  return sharding.constrain(x, ("batch", None, None))


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array) -> jax.Array:
  """Causal self-attention over right-padded histories.

  Args:
    q, k, v: [B, L, H, Dh].
    lengths: [B] valid positions; keys at or past it are masked.

  Returns:
    [B, L, H, Dh]; rows past `lengths` are finite but meaningless.
  """
  seq_len = q.shape[1]
  positions = jnp.arange(seq_len)
  allowed = (positions[None, :] <= positions[:, None])[None] & (
    positions[None, None, :] < lengths[:, None, None]
  )  # [B, L, L]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  logits = jnp.where(allowed[:, None], logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def candidate_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  history_keys: jax.Array,
  history_values: jax.Array,
  prefix: jax.Array,
) -> jax.Array:
  """Each candidate attends to its history prefix and to itself only.

  Args:
    q, k, v: [B, C, H, Dh] the candidates' own projections.
    history_keys, history_values: [B, L, H, Dh] one layer of the user KV cache.
    prefix: [B, C] history positions visible to each candidate.

  Returns:
    [B, C, H, Dh].
  """
  scale = jnp.sqrt(q.shape[-1]).astype(q.dtype)
  history_logits = jnp.einsum("bchd,blhd->bhcl", q, history_keys) / scale
  visible = jnp.arange(history_keys.shape[1])[None, None, :] < prefix[:, :, None]  # [B, C, L]
  history_logits = jnp.where(visible[:, None], history_logits, jnp.finfo(q.dtype).min)
  self_logits = jnp.einsum("bchd,bchd->bhc", q, k) / scale
  logits = jnp.concatenate([history_logits, self_logits[..., None]], axis=-1)
  weights = jax.nn.softmax(logits, axis=-1)
  from_history = jnp.einsum("bhcl,blhd->bchd", weights[..., :-1], history_values)
  from_self = jnp.transpose(weights[..., -1], (0, 2, 1))[..., None] * v
  return from_history + from_self


class Block(nn.Module):
  """Pre-norm transformer block whose attention is supplied by the caller."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.attention_norm = nn.LayerNorm(scale_init=_partitioned(nn.initializers.ones, ("embed",)))
    self.qkv = nn.DenseGeneral(
      features=(3, cfg.num_heads, cfg.head_dim),
      kernel_init=_partitioned(nn.initializers.lecun_normal(), ("embed", None, "heads", "kv")),
    )
    self.attention_out = nn.DenseGeneral(
      features=cfg.width,
      axis=(-2, -1),
      kernel_init=_partitioned(nn.initializers.zeros, ("heads", "kv", "embed")),
    )
    self.mlp_norm = nn.LayerNorm(scale_init=_partitioned(nn.initializers.ones, ("embed",)))
    self.mlp_in = nn.Dense(
      cfg.mlp_dim, kernel_init=_partitioned(nn.initializers.lecun_normal(), ("embed", "mlp"))
    )
    self.mlp_out = nn.Dense(
      cfg.width, kernel_init=_partitioned(nn.initializers.zeros, ("mlp", "embed"))
    )
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """[B, T, W] -> q, k, v each [B, T, H, Dh]."""
    qkv = self.qkv(self.attention_norm(x))
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

  def finish(self, x: jax.Array, attended: jax.Array, deterministic: bool = True) -> jax.Array:
    """Residual attention output, then the residual MLP; dropout on both branches in training."""
    x = x + self.dropout(self.attention_out(attended), deterministic=deterministic)
    mlp = self.mlp_out(nn.gelu(self.mlp_in(self.mlp_norm(x))))
    return x + self.dropout(mlp, deterministic=deterministic)


class Transformer(nn.Module):
  """Causal encoder of action tokens that returns every layer's keys/values."""

  config: ModelConfig

  def setup(self):
    self.blocks = [Block(self.config, name=f"block_{i}") for i in range(self.config.num_layers)]
    self.final_norm = nn.LayerNorm(scale_init=_partitioned(nn.initializers.ones, ("embed",)))
    self.token_dropout = nn.Dropout(self.config.dropout_rate)

  def encode(
    self, tokens: jax.Array, lengths: jax.Array, deterministic: bool = True
  ) -> tuple[jax.Array, KVCache]:
    """[B, L, W] history tokens -> ([B, L, W] states, the user KV cache)."""
    keys, values = [], []
    x = self.token_dropout(_batch_sharded(tokens), deterministic=deterministic)
    for block in self.blocks:
      q, k, v = block.project(x)
      keys.append(k)
      values.append(v)
      x = _batch_sharded(block.finish(x, causal_attention(q, k, v, lengths), deterministic))
    cache = KVCache(keys=jnp.stack(keys), values=jnp.stack(values), lengths=lengths)
    return self.final_norm(x), cache

  def attend_candidates(
    self, tokens: jax.Array, cache: KVCache, prefix: jax.Array, deterministic: bool = True
  ) -> jax.Array:
    """[B, C, W] candidate tokens -> [B, C, W] states, reading the cache only.

    Args:
      tokens: candidate tokens (item + masked action).
      cache: the user KV cache from `encode`.
      prefix: [B, C] history positions each candidate may see (the cache's
        lengths at serving; the slate's request point in training).
      deterministic: no dropout (everywhere but training).
    """
    x = self.token_dropout(_batch_sharded(tokens), deterministic=deterministic)
    for layer, block in enumerate(self.blocks):
      q, k, v = block.project(x)
      attended = candidate_attention(q, k, v, cache.keys[layer], cache.values[layer], prefix)
      x = _batch_sharded(block.finish(x, attended, deterministic))
    return self.final_norm(x)
