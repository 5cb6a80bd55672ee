"""The item encoder against NumPy: hashing, the feature MLP, frozen tables, cold items."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipinrec.config import OptimizerConfig
from unipinrec.data import generated_items
from unipinrec.data.item_features import CategoricalFeature, ItemFeatures, NumericColumn
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.item_encoder import (
  FROZEN_PREFIX,
  ItemEncoder,
  feature_tables,
  generator_tables,
  hash_buckets,
)
from unipinrec.train import item_init
from unipinrec.train.state import TrainState, make_optimizer

N, D, C = 12, 8, 5


def _features(rng) -> ItemFeatures:
  content = rng.normal(size=(N + 1, C)).astype(np.float32)
  content[0] = 0.0
  genres = np.zeros((N + 1, 2), np.int32)
  genres[1:, 0] = rng.integers(1, 4, N)
  genres[1::2, 1] = 3  # odd items hold a second value; the rest hold one
  numeric = rng.normal(size=(N + 1, 1)).astype(np.float32)
  numeric[0] = 0.0
  return ItemFeatures(
    content=content,
    categorical=(CategoricalFeature("genres", genres, ("a", "b", "c")),),
    numeric=numeric,
    has_features=np.arange(N + 1) > 0,
    numeric_columns=(NumericColumn("score", 0.0, 1.0),),
  )


def _config(features: ItemFeatures | None, **overrides) -> ModelConfig:
  config = ModelConfig(
    num_items=N,
    embed_dim=D,
    head_hidden_dim=16,
    side_dim=3,
    item_table_multiple=16,
    **overrides,
  )
  return config if features is None else config.with_item_features(features.shapes)


def _encoder(features: ItemFeatures | None, **overrides):
  """The encoder alone, its parameters (features placed as training places them) and encode."""
  encoder = ItemEncoder(_config(features, **overrides))
  params = jax.jit(encoder.init)(jax.random.key(0), jnp.arange(N + 1))["params"]
  params = nn.meta.unbox(params)
  if features is not None:
    state = TrainState(step=jnp.zeros((), jnp.int32), params={"tokenizer": params}, opt_state=())
    params = item_init.place_item_tables(state, feature_tables(features)).params["tokenizer"]

  def encode(p, items):
    return encoder.apply({"params": p}, jnp.asarray(items))

  return params, encode


def test_hash_buckets_are_deterministic_in_range_and_the_same_in_numpy():
  ids = np.arange(0, 100_000, 7)
  rows = hash_buckets(ids, 3, 1000, xp=np)
  np.testing.assert_array_equal(np.asarray(hash_buckets(jnp.asarray(ids), 3, 1000)), rows)
  np.testing.assert_array_equal(hash_buckets(ids, 3, 1000, xp=np), rows)
  assert rows.shape == (len(ids), 3) and rows.min() >= 0 and rows.max() < 1000
  # Each function spreads ids evenly (chi-square over 10 bins) and the functions differ.
  for j in range(3):
    counts = np.bincount(rows[:, j] // 100, minlength=10)
    expected = len(ids) / 10
    assert ((counts - expected) ** 2 / expected).sum() < 30
  assert np.mean(rows[:, 0] == rows[:, 1]) < 0.01


def _reference(tok, features: ItemFeatures, items: np.ndarray, id_part) -> np.ndarray:
  """The encoder in NumPy: MLP([side mean, content projection, numeric, id part]), unit rows."""
  side = np.asarray(tok["side_embedding"])
  values = features.categorical[0].values[items]
  present = values > 0
  genre = (side[values] * present[..., None]).sum(1) / np.maximum(present.sum(1), 1)[:, None]
  content = features.content[items] @ np.asarray(tok["content_projection"]["kernel"])
  content += np.asarray(tok["content_projection"]["bias"])
  parts = [genre, content, features.numeric[items]] + ([id_part] if id_part is not None else [])
  x = np.concatenate(parts, axis=1)
  hidden = x @ np.asarray(tok["hidden"]["kernel"]) + np.asarray(tok["hidden"]["bias"])
  hidden = np.asarray(jax.nn.gelu(hidden))
  out = hidden @ np.asarray(tok["output"]["kernel"]) + np.asarray(tok["output"]["bias"])
  return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("id_part", ["table", "hashed", "none"])
def test_the_encoder_is_unit_norm_and_matches_numpy(id_part):
  features = _features(np.random.default_rng(0))
  hashing = dict(hash_rows=5, hash_combine="concat") if id_part == "hashed" else {}
  tok, encode = _encoder(features, item_id_part=id_part, **hashing)
  items = np.arange(1, N + 1)
  got = np.asarray(encode(tok, items))
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-4)
  if id_part == "table":
    id_vectors = np.asarray(tok["item_embedding"])[items]
  elif id_part == "hashed":
    buckets = hash_buckets(items, 2, 5, xp=np)
    table = np.asarray(tok["hashed_embedding"])  # [rows, k, D / k]
    id_vectors = np.concatenate([table[buckets[:, j], j] for j in range(2)], axis=1)
  else:
    id_vectors = None
  want = _reference(tok, features, items, id_vectors)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_hashed_sum_adds_each_functions_row():
  params, encode = _encoder(None, item_id_part="hashed", hash_rows=7, hash_functions=3)
  items = np.array([1, 5, 11, 1_000_000])  # an id past the catalogue hashes like any other
  got = np.asarray(encode(params, items))
  table = np.asarray(params["hashed_embedding"])
  buckets = hash_buckets(items, 3, 7, xp=np)
  want = sum(table[buckets[:, j], j] for j in range(3))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert table.shape == (16, 3, D)  # rows padded to the table multiple


def test_without_features_the_table_encoder_is_the_table():
  params, encode = _encoder(None)
  items = np.array([[3, 0], [12, 7]])
  np.testing.assert_array_equal(encode(params, items), np.asarray(params["item_embedding"])[items])


def test_features_are_frozen_and_get_no_gradient():
  features = _features(np.random.default_rng(1))
  tok, encode = _encoder(features, item_id_part="none")
  params = {"tokenizer": tok}  # the optimizer finds the frozen tables by name at any depth
  frozen = {k for k in tok if k.startswith(FROZEN_PREFIX)}
  assert frozen == {f"{FROZEN_PREFIX}_{n}" for n in ("content", "numeric", "categorical_0")}
  np.testing.assert_array_equal(
    np.asarray(tok[f"{FROZEN_PREFIX}_content"])[: N + 1], features.content
  )

  grads = jax.jit(jax.grad(lambda p: jnp.sum(encode(p["tokenizer"], np.arange(1, N + 1))[:, 0])))(
    params
  )
  for name in frozen:
    np.testing.assert_array_equal(grads["tokenizer"][name], 0.0)
  assert np.abs(np.asarray(grads["tokenizer"]["hidden"]["kernel"])).sum() > 0
  optimizer = make_optimizer(OptimizerConfig(), 10)
  state = optimizer.init(params)
  ones = jax.tree.map(jnp.ones_like, params)
  for _ in range(2):  # the second: the warm-up's first rate is 0
    updates, state = jax.jit(optimizer.update)(ones, state, params)
  for name in frozen:
    np.testing.assert_array_equal(updates["tokenizer"][name], 0.0)
  assert np.abs(np.asarray(updates["tokenizer"]["hidden"]["kernel"])).sum() > 0


def test_an_item_never_trained_gets_its_vector_from_its_features():
  """Two items with the same features and no id part have the same vector; others differ."""
  features = _features(np.random.default_rng(2))
  features.content[N] = features.content[3]
  features.numeric[N] = features.numeric[3]
  features.categorical[0].values[N] = features.categorical[0].values[3]
  params, encode = _encoder(features, item_id_part="none")
  got = np.asarray(encode(params, np.arange(N + 1)))
  np.testing.assert_allclose(got[N], got[3], rtol=1e-6)
  assert np.linalg.norm(got[N] - got[4]) > 1e-3
  # In an index of every item's vector, item N's own vector finds item N (or its twin, 3).
  index = store.build(got, IndexConfig(dtype="f32", exact=True))
  found = store.ItemIndex(index, got, None, "").index.search(got[N], 2, exact=True).keys
  assert set(found.tolist()) == {3, N}


def test_content_computed_from_ids_equals_the_table_of_that_content():
  """A generator's content, computed in the step, encodes as the same content in a table."""
  rng = np.random.default_rng(3)
  centres = rng.normal(size=(4, 6)).astype(np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  generator = generated_items.ItemGenerator(
    num_items=N,
    seed=5,
    centres=centres,
    item_noise=0.3,
    zipf_exponent=1.0,
    content_map=rng.normal(size=(7, C)).astype(np.float32),
    content_scale=0.4,
  )
  with pytest.raises(ValueError, match="2\\^24"):  # stored as float32 by `arrays()`
    dataclasses.replace(generator, seed=2**24)
  content = generated_items.content_from_arrays(np.arange(N + 1), generator.arrays())
  features = ItemFeatures(
    content=content,
    categorical=(),
    numeric=np.zeros((N + 1, 0), np.float32),
    has_features=np.arange(N + 1) > 0,
  )
  hashing = dict(item_id_part="hashed", hash_rows=5)
  tok_table, encode = _encoder(features, **hashing)
  encoder = ItemEncoder(_config(None, **hashing).with_item_generator(generator))
  tok = nn.meta.unbox(jax.jit(encoder.init)(jax.random.key(0), jnp.arange(N + 1))["params"])
  state = TrainState(step=jnp.zeros((), jnp.int32), params={"tokenizer": tok}, opt_state=())
  tok = item_init.place_item_tables(state, generator_tables(generator)).params["tokenizer"]
  frozen = {name for name in tok if name.startswith(FROZEN_PREFIX)}
  assert frozen == {f"{FROZEN_PREFIX}_generator_{n}" for n in ("centres", "content_map", "scalars")}
  tok = {
    **{k: v for k, v in tok_table.items() if not k.startswith(FROZEN_PREFIX)},
    **{name: tok[name] for name in frozen},
  }
  items = np.arange(N + 1)
  got = np.asarray(encoder.apply({"params": tok}, jnp.asarray(items)))
  np.testing.assert_allclose(got, np.asarray(encode(tok_table, items)), rtol=1e-5, atol=1e-6)
  grads = jax.grad(lambda p: jnp.sum(encoder.apply({"params": p}, jnp.asarray(items))[:, 0]))(tok)
  for name in frozen:
    np.testing.assert_array_equal(grads[name], 0.0)


def test_the_config_refuses_what_cannot_be_built():
  with pytest.raises(ValueError, match="item_id_part='other'"):
    ModelConfig(item_id_part="other")
  with pytest.raises(ValueError, match="hash_rows >= 1"):
    ModelConfig(item_id_part="hashed")
  with pytest.raises(ValueError, match="splits embed_dim 64 into hash_functions 3"):
    ModelConfig(item_id_part="hashed", hash_rows=4, hash_functions=3, hash_combine="concat")
  with pytest.raises(ValueError, match="nothing to encode"):
    _encoder(None, item_id_part="none")
