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

from kernels import attention
from kernels import candidate_attention as pallas_attention
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


def _layer_norm(config: ModelConfig) -> nn.LayerNorm:
  """LayerNorm whose statistics are float32 (flax's reductions) and output the compute dtype."""
  return nn.LayerNorm(
    scale_init=_partitioned(nn.initializers.ones, ("embed",)), dtype=config.compute_dtype
  )


class Block(nn.Module):
  """Pre-norm transformer block whose attention is supplied by the caller."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.attention_norm = _layer_norm(cfg)
    self.qkv = nn.DenseGeneral(
      features=(3, cfg.num_heads, cfg.head_dim),
      kernel_init=_partitioned(nn.initializers.lecun_normal(), ("embed", None, "heads", "kv")),
      dtype=cfg.compute_dtype,
    )
    self.attention_out = nn.DenseGeneral(
      features=cfg.width,
      axis=(-2, -1),
      kernel_init=_partitioned(nn.initializers.zeros, ("heads", "kv", "embed")),
      dtype=cfg.compute_dtype,
    )
    self.mlp_norm = _layer_norm(cfg)
    self.mlp_in = nn.Dense(
      cfg.mlp_dim,
      kernel_init=_partitioned(nn.initializers.lecun_normal(), ("embed", "mlp")),
      dtype=cfg.compute_dtype,
    )
    self.mlp_out = nn.Dense(
      cfg.width,
      kernel_init=_partitioned(nn.initializers.zeros, ("mlp", "embed")),
      dtype=cfg.compute_dtype,
    )
    self.dropout = nn.Dropout(cfg.dropout_rate)
    if cfg.relative_position_buckets:
      # Zeros: training starts from the absolute-position model and learns recency from there.
      self.relative_bias = self.param(
        "relative_bias",
        _partitioned(nn.initializers.zeros, ("heads", None)),
        (cfg.num_heads, cfg.relative_position_buckets),
      )

  def bias_table(self) -> jax.Array | None:
    """[H, buckets] learned attention-logit bias on query-key distance (None if off)."""
    return self.relative_bias if self.config.relative_position_buckets else None

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
    # The Pallas kernels compute the references' masks; rows past a history's length may differ.
    kernels = pallas_attention if self.config.kernel == "pallas" else attention
    self.causal_attention = kernels.causal_attention
    self.candidate_attention = kernels.candidate_attention
    self.final_norm = _layer_norm(self.config)
    self.token_dropout = nn.Dropout(self.config.dropout_rate)

  def _bias(self, block: Block) -> dict:
    """The bias arguments of the attention, for one block."""
    return {"relative_bias": block.bias_table(), "max_distance": self.config.max_length}

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
      attended = self.causal_attention(q, k, v, lengths, **self._bias(block))
      x = _batch_sharded(block.finish(x, attended, deterministic))
    cache = KVCache(keys=jnp.stack(keys), values=jnp.stack(values), lengths=lengths)
    return self.final_norm(x), cache

  def encode_last(self, tokens: jax.Array, lengths: jax.Array) -> tuple[jax.Array, KVCache]:
    """[B, L, W] history tokens -> ([B, W] state of each last action, the user KV cache).

    What serving needs: every layer's keys/values, but only the last state (the
    query is read there). The last layer attends and runs its MLP for that one
    position, not all L. Equals `encode` at position max(lengths - 1, 0).
    """
    keys, values = [], []
    last = jnp.maximum(lengths - 1, 0)[:, None]  # [B, 1]
    x = tokens
    for layer, block in enumerate(self.blocks):
      q, k, v = block.project(x)
      keys.append(k)
      values.append(v)
      if layer < len(self.blocks) - 1:
        attended = self.causal_attention(q, k, v, lengths, **self._bias(block))
        x = block.finish(x, attended)
      else:
        # One query per history: the pure-JAX attention, whatever the kernel setting.
        q = jnp.take_along_axis(q, last[:, :, None, None], axis=1)  # [B, 1, H, Dh]
        x = jnp.take_along_axis(x, last[:, :, None], axis=1)  # [B, 1, W]
        attended = attention.causal_attention(q, k, v, lengths, last, **self._bias(block))
        x = block.finish(x, attended)
    cache = KVCache(keys=jnp.stack(keys), values=jnp.stack(values), lengths=lengths)
    return self.final_norm(x)[:, 0], cache

  def attend_candidates(
    self,
    tokens: jax.Array,
    cache: KVCache,
    prefix: jax.Array,
    deterministic: bool = True,
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
      attended = self.candidate_attention(
        q, k, v, cache.keys[layer], cache.values[layer], prefix, **self._bias(block)
      )
      x = _batch_sharded(block.finish(x, attended, deterministic))
    return self.final_norm(x)
