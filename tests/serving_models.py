"""Small serving models for tests: every parameter perturbed away from initialisation."""

import jax
import jax.numpy as jnp
import numpy as np

from unipinrec.config import ServingConfig
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.export import bundle as bundle_lib
from unipinrec.export.model import ServingModel
from unipinrec.index.manifest import IndexConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import example_batch

SURFACES = ("home", "search")  # of `export_noisy_bundle`'s bundles


def noisy_serving(
  num_items: int, num_outcomes: int, max_length: int, item_bias: bool, seed: int = 0
) -> ServingModel:
  """A small model whose parameters are all perturbed away from initialisation.

  Zero-initialised residual branches would make the transformer an identity;
  noise on every parameter makes each history position and layer matter. With
  the item bias, the biases are drawn at the scale of the cosine / temperature
  logits, so that they reorder the retrieved items.
  """
  model = UniPinRec(
    ModelConfig(
      num_items=num_items,
      num_outcomes=num_outcomes,
      num_surfaces=2,
      max_length=max_length,
      embed_dim=16,
      action_dim=8,
      mlp_dim=32,
      head_hidden_dim=16,
      item_bias=item_bias,
      dropout_rate=0.0,
      offsets_seconds=(0.0,),
      relative_position_buckets=0,
      exclusive_outcomes=False,
      repeat_buckets=0,  # the exact-search reference has no h: tests/test_history_bias.py
    )
  )
  example = example_batch(model, 2, 1, 3)

  @jax.jit
  def init():
    params = model.init(jax.random.key(seed), example, jnp.zeros(example.items.shape, bool))[
      "params"
    ]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    params = jax.tree.unflatten(tree, noisy)
    if model.config.item_bias:
      bias = params["tokenizer"]["item_bias"]
      params["tokenizer"]["item_bias"] = bias.replace_boxed(bias.value * 30.0)
    return params

  return ServingModel(model, init(), 5, "hash", ("click", "save", "buy")[:num_outcomes])


def export_noisy_bundle(directory, seed: int) -> str:
  """A new current version of the bundle in `directory`: 120 items with ASIN-like ids, two
  outcomes, histories of 10, batch sizes 1, 2 and 4 on CPUs; its path."""
  num_items = 120
  rng = np.random.default_rng(0)
  vocabulary = ItemVocabulary([f"B{i:04d}X" for i in rng.permutation(num_items)])
  return bundle_lib.write_bundle(
    str(directory),
    noisy_serving(num_items, 2, 10, item_bias=True, seed=seed),
    vocabulary,
    SURFACES,
    ServingConfig(num_candidates=16, num_results=5, batch_size=4),
    IndexConfig(dtype="f32", exact=True),
    platforms=("cpu",),
  )
