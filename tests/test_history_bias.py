"""History (repeat) features of retrieval, `model.repeat_buckets`: h against NumPy references in
the model, the loss, evaluation and serving; off, or at zero, it changes nothing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small_model import small_config

from kernels.attention import relative_buckets
from unipinrec import history_loss, losses
from unipinrec.config import ServingConfig, StepConfig, from_mapping
from unipinrec.errors import ConfigError
from unipinrec.evaluation.evaluate import catalogue_scorer
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig
from unipinrec.model import repeats
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.serving.recommender import Recommender, UserRequest
from unipinrec.train.state import example_batch, initial_params
from unipinrec.train.step import blended_loss
from unipinrec.types import Histories

N, O, L, BUCKETS = 12, 2, 20, 8  # L > the exact half of the buckets: logarithmic ones are used
# Returns of every kind: item 5 five times, 3 twice, 9 once; row 1 short, row 2 empty.
HISTORY = np.array(
  [
    [5, 3, 5, 7, 5, 5, 9, 3, 1, 2, 4, 6, 8, 10, 11, 12, 1, 2, 5, 4],
    [2, 2, 6] + [0] * (L - 3),
    [0] * L,
  ],
  np.int32,
)
LENGTHS = np.array([L, 3, 0], np.int32)


def _config(repeat_buckets: int = BUCKETS, **kwargs) -> ModelConfig:
  return small_config(N, O, L, repeat_buckets=repeat_buckets, **kwargs)


def _params(model: UniPinRec, seed: int = 0, table_scale: float = 1.0) -> dict:
  """Initial parameters, with random history-bias tables (zeros at `table_scale` 0)."""
  batch = example_batch(model, 2, 1, 3)
  params = initial_params(model, batch)
  if model.config.repeat_buckets:
    rng = np.random.default_rng(seed)
    params["repeat_bias"] = {
      name: jnp.asarray(table_scale * rng.normal(size=table.shape), jnp.float32)
      for name, table in params["repeat_bias"].items()
    }
  return params


@functools.cache
def _bucket(distance: int) -> int:
  return int(relative_buckets(jnp.asarray(distance), BUCKETS, L))


def _reference_h(params: dict, history: np.ndarray, anchor: int, item: int) -> np.ndarray:
  """[O + 1] h of `item` for the query at `anchor`, loop by loop."""
  positions = [p for p in range(anchor + 1) if item > 0 and history[p] == item]
  if not positions:
    return np.zeros(O + 1)
  # NumPy lookups: the loops call this thousands of times, too often for one JAX op each.
  recency, frequency = (np.asarray(params["repeat_bias"][k]) for k in ("recency", "frequency"))
  return recency[_bucket(anchor - positions[-1])] + frequency[len(positions).bit_length() - 1]


def test_h_of_a_hand_built_history_is_its_last_occurrence_and_count_buckets():
  model = UniPinRec(_config())
  params = _params(model)
  tables = model.apply({"params": params}, method=model.repeat_tables)
  assert tables.frequency.shape == (5, O + 1)  # floor(log2(count)) for counts 1..20
  negatives = np.arange(N + 1, dtype=np.int32)  # padding, then the catalogue
  want = np.array(
    [
      [[_reference_h(params, history, a, m) for m in negatives] for a in range(L)]
      for history in HISTORY
    ]
  )  # [B, L, M, O + 1]
  assert np.ptp(want[0, L - 1, 5]) > 0  # per condition
  # Each anchor's own candidates (the loss's positives).
  anchors = np.arange(L)[None, :, None]
  candidates = np.broadcast_to(negatives, (3, L, N + 1))
  last, count = repeats.occurrences(HISTORY, candidates, np.broadcast_to(np.arange(L), (3, L)))
  np.testing.assert_allclose(tables(anchors - last, count), want, rtol=1e-6)
  # The query at the last action (evaluation and serving): each history item once, with its h.
  items, bias = model.apply({"params": params}, HISTORY, LENGTHS, method=model.history_bias)
  for row, length in enumerate(LENGTHS):
    kept = np.asarray(items[row])
    distinct = sorted(set(HISTORY[row, :length].tolist()))
    assert sorted(kept[kept > 0].tolist()) == distinct
    for slot in np.flatnonzero(kept):
      np.testing.assert_allclose(bias[row, slot], want[row, length - 1, kept[slot]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(bias[row])[kept == 0], 0.0)


def test_repeat_buckets_are_checked_and_refused_with_the_pallas_loss():
  with pytest.raises(ValueError, match="repeat_buckets must be 0 .off. or at least 2"):
    _config(repeat_buckets=1)
  values = {"model": {"repeat_buckets": 16}, "step": {"loss": {"kernel": "pallas"}}}
  with pytest.raises(ConfigError, match="repeat_buckets needs step.loss.kernel='xla'"):
    from_mapping(values)
  assert from_mapping({"model": {"repeat_buckets": 16}}).model.repeat_buckets == 16


def _catalogue_scores(model: UniPinRec, params: dict, conditions: np.ndarray) -> np.ndarray:
  rng = np.random.default_rng(3)
  outcomes = rng.random((3, L, O)) < 0.5
  times = np.cumsum(rng.integers(10, 500, (3, L)), axis=1).astype(np.float32)
  surfaces = np.zeros((3, L), np.int32)
  histories = Histories(
    items=HISTORY, outcomes=outcomes, times=times, surfaces=surfaces, lengths=LENGTHS
  )
  scorer = catalogue_scorer(model, params, histories, conditions)
  return scorer.score_block(slice(None), np.arange(model.config.num_items + 1))


def test_evaluation_scores_add_h_to_the_history_items_only():
  plain = UniPinRec(_config(repeat_buckets=0))
  model = UniPinRec(_config())
  conditions = np.array([0, 2, 1], np.int32)
  params = _params(model)
  without = {k: v for k, v in params.items() if k != "repeat_bias"}
  base = _catalogue_scores(plain, without, conditions)
  # Zero tables: the scores of the model without the feature, exactly.
  np.testing.assert_array_equal(
    _catalogue_scores(model, _params(model, table_scale=0.0), conditions), base
  )
  got = _catalogue_scores(model, params, conditions)
  want = base + np.array(
    [
      [_reference_h(params, HISTORY[r], LENGTHS[r] - 1, i)[conditions[r]] for i in range(N + 1)]
      for r in range(3)
    ]
  )
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.abs(got - base)[0, 5] > 1e-2  # a repeated item moved


def _batch(model: UniPinRec):
  """Two users of the catalogue's 12 items, so that the future repeats the history."""
  rng = np.random.default_rng(4)
  b, length = 2, L
  lengths = np.array([length, 9], np.int32)
  items = rng.integers(1, 5, (b, length)).astype(np.int32)  # four items: returns everywhere
  items[np.arange(length)[None] >= lengths[:, None]] = 0
  return example_batch(model, b, 0, 4).replace(
    items=items,
    outcomes=rng.random((b, length, O)) < 0.5,
    times=np.cumsum(rng.exponential(100.0, (b, length)), axis=1).astype(np.float32),
    history_lengths=lengths,
  )


@functools.partial(jax.jit, static_argnums=(1, 3))  # one compilation, not op-by-op dispatch
def _retrieval_loss(params, model, batch, chunk_anchors: int) -> jax.Array:
  loss = losses.LossConfig(
    softmax="full",
    future_window_seconds=0.0,
    max_future_positives=1,
    mam_weight=0.0,
    ranking_weight=0.0,
    chunk_anchors=chunk_anchors,
  )
  config = StepConfig(mask_prob=0.0, loss=loss)
  log_frequency = jnp.full(N + 1, -np.log(N), jnp.float32)
  return blended_loss(params, model, config, batch, log_frequency, jax.random.key(1))[0]


@pytest.mark.parametrize("chunk_anchors", [0, 7], ids=["whole", "chunked"])
def test_the_loss_with_h_is_the_full_softmax_over_the_catalogue(chunk_anchors):
  model = UniPinRec(_config())
  params = _params(model, table_scale=3.0)
  batch = _batch(model)
  got = _retrieval_loss(params, model, batch, chunk_anchors)
  outputs = model.apply({"params": params}, batch, jnp.zeros(batch.items.shape, bool))
  queries = np.asarray(outputs.queries)  # [B, L, O + 1, D]
  table = np.asarray(model.apply({"params": params}, jnp.arange(N + 1), method=model.encode_items))
  table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
  total, weights = 0.0, 0.0
  for row, history in enumerate(np.asarray(batch.items)):
    for t in range(batch.history_lengths[row] - 1):
      target = history[t + 1]
      h = np.array([_reference_h(params, history, t, i) for i in range(N + 1)])  # [N + 1, O + 1]
      # "any" learns every next item, condition o + 1 those with outcome o.
      for q in np.flatnonzero([True, *batch.outcomes[row, t + 1]]):
        logits = table[1:] @ queries[row, t, q] / model.config.temperature + h[1:, q]
        lse = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
        total += lse - logits[target - 1]
        weights += 1.0
  np.testing.assert_allclose(float(got), total / weights, rtol=1e-5)
  # The tables learn: a gradient on both, and the loss at zero tables is the plain model's.
  grads = jax.grad(_retrieval_loss)(params, model, batch, chunk_anchors)["repeat_bias"]
  assert all(np.abs(np.asarray(g)).max() > 1e-4 for g in grads.values())
  plain = UniPinRec(_config(repeat_buckets=0))
  without = {k: v for k, v in params.items() if k != "repeat_bias"}
  np.testing.assert_allclose(
    _retrieval_loss(_params(model, table_scale=0.0), model, batch, chunk_anchors),
    _retrieval_loss(without, plain, batch, chunk_anchors),
    rtol=1e-6,
  )


def test_history_logsumexp_takes_each_history_item_once_but_the_excluded():
  model = UniPinRec(_config())
  params = _params(model, table_scale=2.0)
  tables = model.apply({"params": params}, method=model.repeat_tables)
  rng = np.random.default_rng(5)
  queries = rng.normal(size=(3, L, 2, 8)).astype(np.float32)  # the first two conditions
  queries /= np.linalg.norm(queries, axis=-1, keepdims=True)
  table = rng.normal(size=(N + 1, 8)).astype(np.float32)
  bias = rng.normal(size=N + 1).astype(np.float32)
  excluded = np.where(rng.random((3, L, 2)) < 0.5, rng.integers(1, N + 1, (3, L, 2)), -1)
  got = np.asarray(
    history_loss.history_logsumexp(
      tables, queries, jnp.take(table, HISTORY, axis=0), HISTORY, excluded, 0.5, bias
    )
  )
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)
  for row, history in enumerate(HISTORY):
    for a in range(L):
      ids = {int(i) for i in history[: a + 1] if i > 0} - set(excluded[row, a].tolist())
      for q in range(2):
        if not ids:
          assert got[row, a, q] < -1e29  # "no history item": -inf, kept finite
          continue
        logits = [
          unit[i] @ queries[row, a, q] / 0.5 + bias[i] + _reference_h(params, history, a, i)[q]
          for i in ids
        ]
        np.testing.assert_allclose(got[row, a, q], np.logaddexp.reduce(logits), rtol=1e-5)


def test_the_sampled_loss_scores_history_items_exactly_and_samples_the_rest():
  model = UniPinRec(_config())
  params = _params(model, table_scale=3.0)
  batch = _batch(model)
  loss = losses.LossConfig(
    num_random_negatives=6,
    num_inbatch_negatives=4,
    future_window_seconds=0.0,
    max_future_positives=1,
    mam_weight=0.0,
    ranking_weight=0.0,
  )
  log_frequency = np.log(np.linspace(1.0, 2.0, N + 1) / np.linspace(1.0, 2.0, N + 1).sum())
  log_frequency = log_frequency.astype(np.float32)
  rng = jax.random.key(1)
  got = jax.jit(blended_loss, static_argnums=(1, 2))(
    params, model, StepConfig(mask_prob=0.0, loss=loss), batch, log_frequency, rng
  )[0]
  # The step's own draw of negatives, redone.
  negatives, log_q = losses.sample_negatives(
    jax.random.split(rng)[1], batch.items, log_frequency, 6, 4, True
  )
  negatives, log_q = np.asarray(negatives), np.asarray(log_q)
  outputs = model.apply({"params": params}, batch, jnp.zeros(batch.items.shape, bool))
  queries = np.asarray(outputs.queries)
  table = np.asarray(model.apply({"params": params}, jnp.arange(N + 1), method=model.encode_items))
  table = table / np.linalg.norm(table, axis=1, keepdims=True)
  total, weights = 0.0, 0.0
  for row, history in enumerate(np.asarray(batch.items)):
    for t in range(batch.history_lengths[row] - 1):
      target, seen = history[t + 1], set(history[: t + 1].tolist())
      for q in np.flatnonzero([True, *batch.outcomes[row, t + 1]]):

        def logit(item, q=q, row=row, t=t, history=history):
          h = _reference_h(params, history, t, item)[q]
          return table[item] @ queries[row, t, q] / model.config.temperature + h

        terms = [logit(target)]
        terms += [logit(i) for i in seen if i != target]  # every history item, once
        terms += [  # sampled ones that are neither history nor the target, each draw
          logit(i) - lq
          for i, lq in zip(negatives, log_q, strict=True)
          if i > 0 and i not in seen and i != target
        ]
        total += np.logaddexp.reduce(terms) - terms[0]
        weights += 1.0
  np.testing.assert_allclose(float(got), total / weights, rtol=1e-5)


def _recommender(tmp_path, params: dict, recency: float | None, config: ServingConfig):
  """A Recommender of a small model whose every parameter is perturbed from initialisation;
  with `recency`, every recency bucket of h but the last action's is that, the rest zero."""
  model = UniPinRec(_config(repeat_buckets=BUCKETS if recency is not None else 0))
  if recency is None:
    params = {k: v for k, v in params.items() if k != "repeat_bias"}
  else:
    table = np.zeros((BUCKETS, O + 1), np.float32)
    table[1:] = recency
    params = dict(params, repeat_bias={"recency": table, "frequency": np.zeros((5, O + 1), "f4")})
  serving = ServingModel(model, params, 1, "hash", ("click", "save"))
  manifest = serving.manifest(IndexConfig(dtype="f32", exact=True))
  directory = str(tmp_path / "index")
  if not (tmp_path / "index").exists():
    store.write(directory, manifest, serving.item_vectors())
  return Recommender(serving, store.load(directory, expected=manifest), config)


@pytest.fixture(scope="module")
def noisy_params() -> dict:
  model = UniPinRec(_config())
  params = _params(model)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(
    tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  )


def _request(items, **kwargs) -> UserRequest:
  n = len(items)
  outcomes = np.zeros((n, O), bool)
  outcomes[:, 0] = True
  return UserRequest(
    user="u",
    items=np.asarray(items, np.int64),
    outcomes=outcomes,
    times=60.0 * np.arange(n),
    surfaces=np.zeros(n, np.int64),
    **kwargs,
  )


def test_a_history_item_scored_highest_is_served(noisy_params, tmp_path):
  history = [3, 9, 3, 11, 7]  # 3 repeated; 7, the last action, keeps h 0
  one = ServingConfig(num_candidates=1, num_results=1, batch_size=2)
  (plain,) = _recommender(tmp_path, noisy_params, None, one).recommend([_request(history)])
  assert plain.items[0] not in (3, 9, 11)  # the index alone serves something else
  served = _recommender(tmp_path, noisy_params, 100.0, one)
  for request in (_request(history), _request(history, condition=2)):
    (result,) = served.recommend([request])
    assert result.items[0] in (3, 9, 11)
    # Its retrieval score is the training logit's times the temperature: cosine + 0.5 x 100.
    assert 49.0 < result.retrieval_scores[0] < 51.0
  # With room for them, every history item with h > 0 is a candidate, once, in either path.
  wide = ServingConfig(num_candidates=5, num_results=5, batch_size=2)
  budgets = _request(history, budgets={"click": 1, "save": 1})
  for result in _recommender(tmp_path, noisy_params, 100.0, wide).recommend(
    [_request(history), budgets]
  ):
    assert {3, 9, 11} <= set(result.items.tolist())
    assert len(set(result.items.tolist())) == 5


def test_zero_tables_serve_as_the_model_without_them(noisy_params, tmp_path):
  config = ServingConfig(num_candidates=6, num_results=6, batch_size=2)
  requests = [
    _request([3, 9, 3, 11, 7]),
    _request([]),
    _request([1, 2, 1], budgets={"click": 1, "save": 2}),
  ]
  plain = _recommender(tmp_path, noisy_params, None, config).recommend(requests)
  zero = _recommender(tmp_path, noisy_params, 0.0, config).recommend(requests)
  for a, b in zip(plain, zero, strict=True):
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_allclose(a.retrieval_scores, b.retrieval_scores, rtol=1e-6)
    np.testing.assert_array_equal(a.retrieved_for, b.retrieved_for)


def test_history_items_that_h_pushes_down_leave_their_slots_to_the_next_items(
  noisy_params, tmp_path
):
  history = [3, 9, 3, 11, 7]  # 7, the last action, keeps h 0; the others get -100
  k = 6
  whole = ServingConfig(num_candidates=N, num_results=N, batch_size=2)
  (plain,) = _recommender(tmp_path, noisy_params, None, whole).recommend([_request(history)])
  by_index = plain.items[np.argsort(-plain.retrieval_scores, kind="stable")]  # the index's order
  pushed = {3, 9, 11}
  assert pushed & set(by_index[:k].tolist())  # the index's K best hold items h pushes down
  one_call = ServingConfig(num_candidates=k, num_results=k, batch_size=2)
  (served,) = _recommender(tmp_path, noisy_params, -100.0, one_call).recommend([_request(history)])
  want = [i for i in by_index.tolist() if i not in pushed][:k]
  assert sorted(served.items.tolist()) == sorted(want)
