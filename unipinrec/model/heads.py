"""The two heads on the shared states: outcome-conditioned retrieval and per-outcome ranking."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from unipinrec.model.config import ModelConfig


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Unit vectors, so that dot products are cosines and an inner-product index serves them.

  Float32 whatever `x`'s dtype: cosines over a temperature are logits, which bf16 rounds too
  coarsely.
  """
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class RetrievalHead(nn.Module):
  """State + MLP(state, outcome embedding) -> unit query vector (PinRec's outcome conditioning).

  Condition 0 asks for any engagement; condition o >= 1 for outcome o - 1.
  With several `offsets_seconds`, a learned offset embedding is added to the
  condition's, so one state emits a query per future offset (multi-token
  generation); offset 0 (the next action) adds nothing, so a one-offset model
  has no offset parameters at all.
  The MLP is a residual on the state's item coordinates: at initialisation the
  query is the (contextualised) item itself, already aligned with the item
  table it is scored against.
  """

  config: ModelConfig

  @nn.compact
  def __call__(
    self, states: jax.Array, conditions: jax.Array, offsets: jax.Array | None = None
  ) -> jax.Array:
    """[..., W] states, [...] condition ids and [...] offset ids -> [..., D] unit queries."""
    cfg = self.config
    dtype = cfg.compute_dtype
    condition_embedding = nn.Embed(
      cfg.num_conditions,
      cfg.embed_dim,
      embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(stddev=0.1), ("condition", "embed")
      ),
      name="condition_embedding",
    )
    condition = condition_embedding(conditions)
    if offsets is not None and cfg.num_offsets > 1:
      offset_table = self.param(
        "offset_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.1), ("offset", "embed")),
        (cfg.num_offsets - 1, cfg.embed_dim),
      )
      # Row 0 of the lookup is "now": zero, so offset 0 is the plain query.
      table = jnp.concatenate([jnp.zeros((1, cfg.embed_dim), offset_table.dtype), offset_table])
      condition = condition + jnp.take(table, offsets, axis=0)
    # The MLP's first layer reads concat([state, condition]); it is applied to each part on its
    # own, so a state shared by several conditions is multiplied once, before broadcasting.
    hidden = nn.gelu(
      ConcatDense(cfg.head_hidden_dim, (None, "mlp"), dtype, name="hidden")(states, condition)
    )
    residual = nn.Dense(
      cfg.embed_dim,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed")),
      dtype=dtype,
      name="query",
    )(hidden)
    return l2_normalize(states[..., : cfg.embed_dim] + residual)


class ConcatDense(nn.Module):
  """`nn.Dense` on concat([a, b], -1), computed as a @ K[:A] + b @ K[A:] + bias.

  Its parameters are `nn.Dense`'s on the concatenation (kernel [A + B, F],
  bias [F]); the parts broadcast against each other only after the product,
  so a part with size-1 dimensions is multiplied at its own size. It computes
  in `dtype`, as `nn.Dense(dtype=...)` does.
  """

  features: int
  kernel_axes: tuple[str | None, ...]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """[..., A] and [..., B] (mutually broadcastable) -> [..., F]."""
    kernel = self.param(
      "kernel",
      nn.with_logical_partitioning(nn.initializers.lecun_normal(), self.kernel_axes),
      (a.shape[-1] + b.shape[-1], self.features),
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    a, b, kernel, bias = nn.dtypes.promote_dtype(a, b, kernel, bias, dtype=self.dtype)
    split = a.shape[-1]
    return (a @ kernel[:split] + bias) + b @ kernel[split:]


def logits_with_none(logits: jax.Array) -> jax.Array:
  """[..., O] task-head logits -> [..., O + 1] with "none" first, its logit fixed at 0."""
  return jnp.concatenate([jnp.zeros_like(logits[..., :1]), logits], axis=-1)


def outcome_probabilities(logits: jax.Array, exclusive: bool) -> jax.Array:
  """[..., O] task-head logits -> [..., O] outcome probabilities.

  exclusive: a softmax over (none, outcome 1, ..., outcome O) with none's logit
  fixed at 0, so the probabilities sum to P(engaged) < 1; with one outcome it is
  the sigmoid. Otherwise one independent sigmoid per outcome.
  """
  if not exclusive:
    return jax.nn.sigmoid(logits)
  return jax.nn.softmax(logits_with_none(logits), axis=-1)[..., 1:]


class TaskHeads(nn.Module):
  """One small MLP per outcome on a masked token's state -> [..., O] logits.

  Besides the state, each MLP reads the elementwise product of the state's item
  coordinates (where the retrieval query is read from) with the token's own unit
  item vector: user-item affinity is a dot product, which an MLP on the state
  alone approximates poorly, while a linear layer on the product gets it exactly.
  The MLPs compute in the compute dtype; the logits leave in float32, which the losses and
  the ranking metrics need.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, states: jax.Array, item_vectors: jax.Array) -> jax.Array:
    """[..., W] states and [..., D] unit item vectors of the same tokens -> [..., O] logits."""
    cfg = self.config
    features = jnp.concatenate([states, states[..., : cfg.embed_dim] * item_vectors], axis=-1)
    w_hidden = self.param(
      "hidden_kernel",
      nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", None, "mlp")),
      (cfg.width + cfg.embed_dim, cfg.num_outcomes, cfg.head_hidden_dim),
    )
    b_hidden = self.param(
      "hidden_bias", nn.initializers.zeros, (cfg.num_outcomes, cfg.head_hidden_dim)
    )
    w_out = self.param(
      "out_kernel",
      nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "mlp")),
      (cfg.num_outcomes, cfg.head_hidden_dim),
    )
    b_out = self.param("out_bias", nn.initializers.zeros, (cfg.num_outcomes,))
    features, w_hidden, b_hidden, w_out = nn.dtypes.promote_dtype(
      features, w_hidden, b_hidden, w_out, dtype=cfg.compute_dtype
    )
    hidden = nn.gelu(jnp.einsum("...d,doh->...oh", features, w_hidden) + b_hidden)
    logits = jnp.einsum("...oh,oh->...o", hidden, w_out, preferred_element_type=jnp.float32)
    return logits + b_out
