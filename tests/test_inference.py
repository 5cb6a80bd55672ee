"""One way from a history to its queries (`model.inference.retrieve`): evaluation's catalogue
scores, the Recommender's retrieval and generation's lists agree on the same users."""

import dataclasses

import jax
import numpy as np
import pytest

from unipinrec.config import ServingConfig
from unipinrec.evaluation.evaluate import catalogue_scorer
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.serving import generation
from unipinrec.serving.recommender import Recommender, UserRequest
from unipinrec.train.state import example_batch, initial_params
from unipinrec.types import Histories

N, O, L, K = 40, 2, 10, 8
NAMES = ("click", "save")
# Item 3 returns often, so that h (the history bias) moves it; user 3 is new.
HISTORIES = [[3, 17, 3, 25, 9, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [30, 30], []]
CONDITIONS = np.array([0, 2, 1, 0], np.int32)


@pytest.fixture(scope="module")
def serving() -> ServingModel:
  """Item bias and history features on, every parameter perturbed away from initialisation."""
  model = UniPinRec(
    ModelConfig(
      num_items=N,
      num_outcomes=O,
      num_surfaces=2,
      max_length=L,
      embed_dim=16,
      action_dim=8,
      mlp_dim=32,
      head_hidden_dim=16,
      item_bias=True,
      repeat_buckets=4,
      dropout_rate=0.0,
      offsets_seconds=(0.0,),
      relative_position_buckets=0,
      exclusive_outcomes=False,
    )
  )
  example = example_batch(model, 2, 1, 3)
  leaves, tree = jax.tree.flatten(initial_params(model, example))
  keys = jax.random.split(jax.random.key(1), len(leaves))
  noisy = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  params = jax.tree.unflatten(tree, noisy)
  # h at the scale of cosine / temperature, so that it reorders the history items.
  params["repeat_bias"] = jax.tree.map(lambda t: 20.0 * t, params["repeat_bias"])
  return ServingModel(model, params, 1, "hash", NAMES)


def _requests() -> list[UserRequest]:
  rng = np.random.default_rng(0)
  requests = []
  for user, (items, condition) in enumerate(zip(HISTORIES, CONDITIONS, strict=True)):
    n = len(items)
    outcomes = rng.random((n, O)) < 0.5
    outcomes[:, 0] = True
    times = np.cumsum(rng.integers(10, 900, n)).astype(np.float64)  # whole seconds: exact
    surfaces = rng.integers(0, 2, n)
    requests.append(
      UserRequest(user, np.asarray(items, np.int64), outcomes, times, surfaces, condition=condition)
    )
  return requests


def _histories(requests: list[UserRequest]) -> Histories:
  """The requests' histories as evaluation holds them (times from the first action)."""
  shape = (len(requests), L)
  fields = {
    "items": np.zeros(shape, np.int32),
    "outcomes": np.zeros(shape + (O,), bool),
    "times": np.zeros(shape, np.float32),
    "surfaces": np.zeros(shape, np.int32),
  }
  lengths = np.zeros(len(requests), np.int32)
  for row, request in enumerate(requests):
    kept = slice(max(len(request.items) - L, 0), None)  # the model's window: the last L
    n = len(request.items[kept])
    lengths[row] = n
    fields["items"][row, :n] = request.items[kept]
    fields["outcomes"][row, :n] = request.outcomes[kept]
    fields["times"][row, :n] = request.times[kept] - (request.times[kept][0] if n else 0.0)
    fields["surfaces"][row, :n] = request.surfaces[kept]
  return Histories.from_fields(dict(fields, history_lengths=lengths))


def _evaluation_scores(serving: ServingModel, histories: Histories, conditions) -> np.ndarray:
  """[B, N + 1] evaluation's catalogue scores: the training logit, cosine / T + bias + h."""
  scorer = catalogue_scorer(serving.model, serving.params, histories, np.asarray(conditions))
  return scorer.score_block(slice(None), np.arange(serving.model.config.num_items + 1))


def _best(scores: np.ndarray) -> set[int]:
  """The K items of the highest scores (item 0, padding, left out)."""
  return set((np.argsort(-scores[1:], kind="stable")[:K] + 1).tolist())


def test_the_recommender_retrieves_what_evaluation_scores(serving, tmp_path):
  manifest = serving.manifest(IndexConfig(dtype="f32", exact=True))
  store.write(str(tmp_path), manifest, serving.item_vectors())
  config = ServingConfig(num_candidates=K, num_results=K, batch_size=3)
  recommender = Recommender(serving, store.load(str(tmp_path), expected=manifest), config)
  requests = _requests()
  histories = _histories(requests)
  scores = _evaluation_scores(serving, histories, CONDITIONS)
  temperature = serving.model.config.temperature
  for row, result in enumerate(recommender.recommend(requests)):
    assert set(result.items.tolist()) == _best(scores[row])
    # The Recommender reports scores in the index's units: the logit times the temperature.
    np.testing.assert_allclose(
      result.retrieval_scores, temperature * scores[row, result.items], rtol=1e-5, atol=1e-4
    )
  # h decides part of what is retrieved, so it is compared too.
  plain = ServingModel(
    UniPinRec(dataclasses.replace(serving.model.config, repeat_buckets=0)),
    {name: p for name, p in serving.params.items() if name != "repeat_bias"},
    1,
    "hash",
    NAMES,
  )
  without_h = _evaluation_scores(plain, histories, CONDITIONS)
  assert any(_best(a) != _best(b) for a, b in zip(scores, without_h, strict=True))


def test_generation_lists_the_best_unseen_items_of_evaluation_scores(serving):
  model, params = serving.model, serving.params
  histories = _histories(_requests())
  seen = np.zeros((len(HISTORIES), N + 1), bool)
  for row, length in enumerate(histories.lengths):
    seen[row, histories.items[row, :length]] = True
  seen[:, 0] = True  # the padding item
  any_lists = np.asarray(generation.multi_token_generator(model, 1, K)(params, histories))[:, 0]
  save_lists = generation.generate(model, params, histories, {"save": K}, NAMES).items
  for condition, lists in ((0, any_lists), (2, save_lists)):
    scores = _evaluation_scores(serving, histories, np.full(len(HISTORIES), condition, np.int32))
    want = np.argsort(-np.where(seen, -np.inf, scores), axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(lists, want)
