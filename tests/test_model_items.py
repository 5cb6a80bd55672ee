"""The model's catalogue encoded a chunk at a time (`eval.stored_item_vectors_mib` exceeded)
against its stored item vectors: the same vectors, ranks, top items and evaluation report."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small_model import small_config

from unipinrec.config import EvalConfig
from unipinrec.data.examples import EvalExamples
from unipinrec.errors import ConfigError
from unipinrec.evaluation import catalogue, evaluate, model_items
from unipinrec.evaluation.dot_blocks import ItemEncoder
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import example_batch

N, O, L, U, R, C = 300, 2, 12, 20, 6, 5  # N and U divide by neither chunk: padded last chunks
NAMES = ("click", "save")
STORED = EvalConfig(user_chunk=8, item_chunk=64)
ENCODED = EvalConfig(user_chunk=8, item_chunk=64, stored_item_vectors_mib=0)
MODELS = {
  "hashed": dict(item_id_part="hashed", hash_rows=64, repeat_buckets=0),
  "item_bias_and_history_bias": dict(item_bias=True, repeat_buckets=8),
}


@functools.cache
def _model(kind: str) -> tuple[UniPinRec, dict]:
  """A small model and random parameters (noise on every one: the item and history biases are
  not zero)."""
  model = UniPinRec(small_config(N, O, L, **MODELS[kind]))
  batch = example_batch(model, 2, 1, 3)
  init = jax.jit(model.init)  # op by op, the init is slower than its compilation
  params = nn.unbox(init(jax.random.key(0), batch, jnp.zeros(batch.items.shape, bool)))
  leaves, tree = jax.tree.flatten(params["params"])
  keys = jax.random.split(jax.random.key(1), len(leaves))
  noisy = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  return model, jax.tree.unflatten(tree, noisy)


def _history(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
  lengths = rng.integers(1, L + 1, rows).astype(np.int32)
  inside = np.arange(L) < lengths[:, None]
  return {
    "items": np.where(inside, rng.integers(1, 40, (rows, L)), 0).astype(np.int32),  # repeats
    "outcomes": (rng.random((rows, L, O)) < 0.5) & inside[..., None],
    "times": np.cumsum(rng.integers(10, 500, (rows, L)), axis=1).astype(np.float32),
    "surfaces": np.zeros((rows, L), np.int32),
    "history_lengths": lengths,
  }


def _examples() -> EvalExamples:
  rng = np.random.default_rng(0)
  history = _history(rng, U)
  return EvalExamples(
    retrieval_history=history,
    retrieval_targets=rng.integers(1, N + 1, U),
    retrieval_target_outcomes=rng.random((U, O)) < 0.5,
    retrieval_requests=np.arange(U),
    retrieval_seen=[row[row > 0] for row in history["items"]],
    ranking_history=_history(rng, R),
    ranking_requests=np.arange(R),
    ranking_items=rng.integers(1, N + 1, (R, C)).astype(np.int32),
    ranking_outcomes=rng.random((R, C, O)) < 0.4,
    ranking_times=np.full(R, 1e6, np.float32),
    ranking_surfaces=np.zeros(R, np.int32),
  )


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_encoded_items_rank_as_the_stored_vectors(kind):
  model, params = _model(kind)
  stored = model_items.catalogue_items(model, params, STORED)
  encoder = model_items.catalogue_items(model, params, ENCODED)
  assert isinstance(encoder, ItemEncoder) and stored.shape == (N + 1, 8 + model.config.item_bias)
  np.testing.assert_allclose(encoder(np.arange(N + 1)), stored, atol=1e-6)
  rng = np.random.default_rng(1)
  queries = rng.normal(size=(U, stored.shape[1])).astype(np.float32)
  targets = rng.integers(1, N + 1, U)
  seen = [rng.integers(0, N + 1, 7) for _ in range(U)]
  negatives = rng.integers(1, N + 1, (U, 9))
  held = catalogue.DotScorer(queries, stored, 0.5)
  encoded = catalogue.DotScorer(queries, encoder, 0.5)
  np.testing.assert_allclose(
    encoded.score_block(slice(3, 9), np.arange(5, 80)),
    held.score_block(slice(3, 9), np.arange(5, 80)),
    rtol=1e-5,
  )
  want = catalogue.catalogue_ranks(held, N, targets, seen, negatives, STORED)
  got = catalogue.catalogue_ranks(encoded, N, targets, seen, negatives, STORED)
  assert want.keys() == got.keys()
  for name, values in want.items():
    np.testing.assert_array_equal(got[name], values, err_msg=name)
  np.testing.assert_array_equal(
    catalogue.top_items(encoded, N, U, 10, STORED), catalogue.top_items(held, N, U, 10, STORED)
  )


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_evaluation_over_the_budget_reports_the_stored_figures_without_them(kind, monkeypatch):
  model, params = _model(kind)
  examples = _examples()
  negatives = np.random.default_rng(2).integers(1, N + 1, (U, 9))

  def report(config):
    return evaluate.evaluate_model(model, params, examples, NAMES, 8, negatives, eval_config=config)

  want = report(STORED)
  assert {"retrieval_sampled", "retrieval_by_condition", "ranking_by_retrieval_head"} <= set(want)

  def refused(self):
    raise AssertionError("the catalogue's item vectors were built")

  monkeypatch.setattr(UniPinRec, "item_vectors", refused)
  assert report(ENCODED) == want


def test_an_index_of_a_catalogue_over_the_budget_is_refused():
  model, params = _model("hashed")
  config = EvalConfig(ann=True, stored_item_vectors_mib=0)
  with pytest.raises(ConfigError, match="eval.stored_item_vectors_mib=0.*export path"):
    evaluate.evaluate_model(model, params, _examples(), NAMES, 8, eval_config=config)
