"""The item side: an item's vector from its id part and, where the data has them, its features.

Without features the vector is the id part alone: the plain id table (SASRec's, the default)
or hashed ids. With features it is PinRec's item tower, MLP([content projection, side-feature
embeddings, numeric features, id part]) L2-normalised, so an item never seen in training still
gets a vector from its features. The same vector is the history token's item part, the
retrieval target and the ranking candidate.

The features are frozen tables of the parameters (`item_features_*`, one row per item, split
over the vocabulary like the id table): checkpoints and bundles carry them, the optimizer
leaves them alone (`train/state.py`) and no gradient reaches them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unipinrec.data import generated_items
from unipinrec.data.item_features import ItemFeatures
from unipinrec.hashing import GOLDEN, mix32
from unipinrec.model.config import ModelConfig
from unipinrec.model.heads import l2_normalize

FROZEN_PREFIX = "item_features"  # parameters under this prefix are data, never trained
GENERATOR_PREFIX = "generator_"  # after FROZEN_PREFIX: the item generator's arrays


def hash_buckets(items, num_functions: int, rows: int, xp=jnp):
  """[...] item ids -> [..., k] rows in [0, rows) of k seeded hash functions.

  Function j is MurmurHash3's finaliser of `id + (j + 1) x golden` (uint32 arithmetic), so
  NumPy (`xp=np`) and JAX give the same rows on every platform and run.
  """
  ids = xp.asarray(items).astype(xp.uint32)[..., None]
  seeds = (np.arange(1, num_functions + 1, dtype=np.uint64) * GOLDEN % 2**32).astype(np.uint32)
  mixed = mix32(ids + xp.asarray(seeds), xp)
  return (mixed % xp.uint32(rows)).astype(xp.int32)


def _padded_rows(rows: int) -> nn.initializers.Initializer:
  """normal(0.1) on the first `rows` rows, zeros on the unused rows after them.

  The used rows draw exactly what an unpadded table of `rows` rows would.
  """

  def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    used = nn.initializers.normal(stddev=0.1)(key, (rows,) + tuple(shape[1:]), dtype)
    return jnp.pad(used, [(0, shape[0] - rows)] + [(0, 0)] * (len(shape) - 1))

  return init


class ItemEncoder(nn.Module):
  """Item ids -> [..., D] item vectors (not normalised without features, unit with them).

  The feature MLP computes in the compute dtype; the vectors leave in float32 (the table's
  rows, or the float32 L2 normalisation), and the token casts them to the compute dtype.
  """

  config: ModelConfig

  def setup(self):
    cfg = self.config
    rows = cfg.item_table_rows
    if cfg.item_id_part == "none" and not cfg.has_item_features:
      raise ValueError("item_id_part='none' leaves items nothing to encode: no features")
    if cfg.item_id_part == "table":
      self.item_embedding = self.param(
        "item_embedding",
        nn.with_logical_partitioning(_padded_rows(cfg.num_items + 1), ("vocab", "embed")),
        (rows, cfg.embed_dim),
      )
    elif cfg.item_id_part == "hashed":
      width = cfg.embed_dim // (cfg.hash_functions if cfg.hash_combine == "concat" else 1)
      self.hashed_embedding = self.param(
        "hashed_embedding",
        nn.with_logical_partitioning(_padded_rows(cfg.hash_rows), ("vocab", None, "embed")),
        (cfg.hash_table_rows, cfg.hash_functions, width),
      )
    if cfg.item_bias:
      # Zeros: training starts from the plain cosine and learns each item's own pull.
      self.item_bias = self.param(
        "item_bias",
        nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
        (rows,),
      )
    if cfg.has_item_features:
      self._feature_setup(rows)

  def _feature_setup(self, rows: int) -> None:
    cfg = self.config
    frozen = nn.with_logical_partitioning(nn.initializers.zeros, ("vocab", None))
    # Only the features the data has: a checkpoint cannot hold an empty array.
    if cfg.content_generator:
      self.generator = self._generator_params()
    elif cfg.content_dim:
      self.content = self.param(f"{FROZEN_PREFIX}_content", frozen, (rows, cfg.content_dim))
    if cfg.numeric_features:
      self.numeric = self.param(f"{FROZEN_PREFIX}_numeric", frozen, (rows, cfg.numeric_features))
    # Value ids as float32: gradients need float leaves, and ids below 2^24 are exact.
    self.categorical = [
      self.param(f"{FROZEN_PREFIX}_categorical_{i}", frozen, (rows, width))
      for i, (_, width) in enumerate(cfg.categorical_features)
    ]
    if cfg.categorical_features:
      # One table for every categorical feature, each at its own offset: one lookup group.
      self.side_embedding = self.param(
        "side_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.1), (None, None)),
        (sum(values for values, _ in cfg.categorical_features), cfg.side_dim),
      )
    dense = nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "mlp"))
    dtype = cfg.compute_dtype
    if cfg.content_dim:
      self.content_projection = nn.Dense(cfg.embed_dim, kernel_init=dense, dtype=dtype)
    self.hidden = nn.Dense(cfg.head_hidden_dim, kernel_init=dense, dtype=dtype)
    out = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed"))
    self.output = nn.Dense(cfg.embed_dim, kernel_init=out, dtype=dtype)

  def _generator_params(self) -> dict[str, jax.Array]:
    """The item generator's small frozen arrays (`ItemGenerator.arrays()`), not split."""
    cfg = self.config
    subtopics, latent = cfg.content_generator
    shapes = {
      "centres": (subtopics, latent),
      "content_map": (latent + 1, cfg.content_dim),
      "scalars": (3,),
    }
    whole = nn.with_logical_partitioning(nn.initializers.zeros, (None,) * 2)
    return {
      name: self.param(
        f"{FROZEN_PREFIX}_{GENERATOR_PREFIX}{name}",
        whole if len(shape) == 2 else nn.initializers.zeros,
        shape,
      )
      for name, shape in shapes.items()
    }

  def id_part(self, items: jax.Array) -> jax.Array | None:
    """[...] ids -> [..., D] the id part of their vectors; None for `item_id_part='none'`."""
    cfg = self.config
    if cfg.item_id_part == "table":
      return jnp.take(self.item_embedding, items, axis=0)
    if cfg.item_id_part == "hashed":
      buckets = hash_buckets(items, cfg.hash_functions, cfg.hash_rows)  # [..., k]
      parts = self.hashed_embedding[buckets, jnp.arange(cfg.hash_functions)]  # [..., k, w]
      if cfg.hash_combine == "sum":
        return parts.sum(axis=-2)
      return parts.reshape(parts.shape[:-2] + (-1,))
    return None

  def biases(self, whole_table: bool = False) -> jax.Array | None:
    """[N + 1] learned retrieval logit bias per item (all [R] rows with `whole_table`).

    None when the model has no item bias.
    """
    if not self.config.item_bias:
      return None
    return self.item_bias if whole_table else self.item_bias[: self.config.num_items + 1]

  def __call__(self, items: jax.Array) -> jax.Array:
    """[...] item ids -> [..., D] their vectors."""
    if not self.config.has_item_features:
      return self.id_part(items)
    tables = {f"categorical_{i}": table for i, table in enumerate(self.categorical)}
    if self.config.content_dim and not self.config.content_generator:
      tables["content"] = self.content
    if self.config.numeric_features:
      tables["numeric"] = self.numeric
    rows = {name: jax.lax.stop_gradient(jnp.take(t, items, axis=0)) for name, t in tables.items()}
    if self.config.content_generator:
      generator = jax.lax.stop_gradient(self.generator)
      rows["content"] = generated_items.content_from_arrays(items, generator, jnp)
    return self.from_features(items, rows)

  def from_features(self, items: jax.Array, rows: dict[str, jax.Array]) -> jax.Array:
    """[...] item ids and their rows of the frozen tables -> [..., D] unit vectors.

    `rows` is keyed by `ItemFeatures.tables()`' names (the model's tables only), as the tables
    hold them: an item need not have a row in the tables (an item added after training).
    """
    parts = self._side_embeddings(rows)
    if self.config.content_dim:
      parts.append(self.content_projection(rows["content"]))
    if self.config.numeric_features:
      parts.append(rows["numeric"])
    id_vectors = self.id_part(items)
    if id_vectors is not None:
      parts.append(id_vectors)
    hidden = nn.gelu(self.hidden(jnp.concatenate(parts, axis=-1)))
    vectors = self.output(hidden)
    return l2_normalize(vectors)

  def _side_embeddings(self, rows: dict[str, jax.Array]) -> list[jax.Array]:
    """[..., side_dim] per categorical feature: the mean of the item's values' embeddings."""
    embeddings, offset = [], 0
    for i, (values, _) in enumerate(self.config.categorical_features):
      ids = rows[f"categorical_{i}"].astype(jnp.int32)  # [..., K], 0: no value
      present = (ids > 0)[..., None]
      embedded = jnp.take(self.side_embedding, ids + offset, axis=0)
      count = jnp.maximum(present.sum(axis=-2), 1)
      embeddings.append(jnp.where(present, embedded, 0.0).sum(axis=-2) / count)
      offset += values
    return embeddings


def feature_tables(features: ItemFeatures) -> dict[str, np.ndarray]:
  """The encoder's frozen parameters that hold `features`, by parameter name."""
  tables = features.tables().items()
  return {f"{FROZEN_PREFIX}_{name}": table for name, table in tables if table.shape[1]}


def generator_tables(generator: generated_items.ItemGenerator) -> dict[str, np.ndarray]:
  """The encoder's frozen parameters that hold the item `generator`, by parameter name."""
  arrays = generator.arrays().items()
  return {f"{FROZEN_PREFIX}_{GENERATOR_PREFIX}{name}": array for name, array in arrays}
