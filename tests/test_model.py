"""What the architecture promises: causality, candidate independence, cached equals recomputed."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention
from unipinrec.model import heads
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import example_batch, initial_params
from unipinrec.types import TrainBatch

B, L, S, C, O = 3, 8, 2, 5, 2
TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.fixture(scope="module", params=[0, 4], ids=["absolute", "relative_bias"])
def model_and_params(request):
  """Every property holds with and without the learned relative-position bias."""
  relative_buckets = request.param
  model = UniPinRec(
    ModelConfig(
      num_items=50,
      num_outcomes=O,
      num_surfaces=2,
      max_length=L,
      embed_dim=16,
      action_dim=8,
      num_layers=2,
      num_heads=2,
      mlp_dim=32,
      head_hidden_dim=16,
      relative_position_buckets=relative_buckets,
      dropout_rate=0.0,
      offsets_seconds=(0.0,),
      exclusive_outcomes=False,
    )
  )
  batch = example_batch(model, B, S, C)
  params = initial_params(model, batch)
  # Random item rows and biases, so that no test passes because a weight is zero.
  params = jax.tree.map(
    lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params
  )
  # Biases of a logit's size, so that an off-by-one distance would show.
  for layer in range(2):
    block = params["transformer"][f"block_{layer}"]
    if "relative_bias" in block:
      block["relative_bias"] = jax.random.normal(
        jax.random.key(layer), block["relative_bias"].shape
      )
  return model, params


def _histories(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  lengths = np.array([L, 5, 1], np.int32)
  items = rng.integers(1, 51, (B, L)).astype(np.int32)
  items[np.arange(L)[None] >= lengths[:, None]] = 0
  return {
    "items": items,
    "outcomes": rng.random((B, L, O)) < 0.5,
    "times": np.cumsum(rng.exponential(3000.0, (B, L)), axis=1).astype(np.float32),
    "surfaces": rng.integers(0, 2, (B, L)).astype(np.int32),
    "lengths": lengths,
  }


def _apply(model, params, *args, **kwargs):
  """`model.apply`, compiled: op by op, each of the pass's many small operations compiles."""
  jitted = jax.jit(model.apply, static_argnames=("method", "deterministic"))
  return jitted({"params": params}, *args, **kwargs)


def _encode(model, params, history, masked=None):
  return _apply(model, params, **history, action_masked=masked, method=model.encode)


def _rank(model, params, history, candidates, request_times, prefix, surfaces=None):
  _, cache = _encode(model, params, history)
  if surfaces is None:
    surfaces = np.zeros(candidates.shape, np.int32)
  return _apply(
    model,
    params,
    cache,
    history["times"],
    candidates,
    request_times,
    surfaces,
    prefix,
    method=model.rank,
  )


def test_later_actions_do_not_change_earlier_states(model_and_params):
  model, params = model_and_params
  history = _histories(0)
  states, cache = _encode(model, params, history)
  cut = 3
  perturbed = {k: np.array(v) for k, v in history.items()}
  perturbed["items"][0, cut:] = (perturbed["items"][0, cut:] % 50) + 1
  perturbed["outcomes"][0, cut:] = ~perturbed["outcomes"][0, cut:]
  perturbed["surfaces"][0, cut:] = 1 - perturbed["surfaces"][0, cut:]
  perturbed["times"][0, cut:] += 5000.0
  states2, cache2 = _encode(model, params, perturbed)
  np.testing.assert_allclose(states2[0, :cut], states[0, :cut], **TOL)
  np.testing.assert_allclose(cache2.keys[:, 0, :cut], cache.keys[:, 0, :cut], **TOL)
  np.testing.assert_allclose(cache2.values[:, 0, :cut], cache.values[:, 0, :cut], **TOL)
  # The perturbation did reach the later positions, so the check above could fail.
  assert np.max(np.abs(states2[0, cut:] - states[0, cut:])) > 1e-3
  # Padding (past the length) never leaks into valid positions either.
  np.testing.assert_allclose(states2[1:], states[1:], **TOL)


def test_serving_encoder_equals_encode_at_the_last_action(model_and_params):
  """`encode_last` (serving: one query in the last layer) reads the same state and cache."""
  model, params = model_and_params
  history = _histories(9)
  states, cache = _encode(model, params, history)
  last, serving_cache = _apply(model, params, **history, method=model.encode_last)
  rows = np.maximum(history["lengths"] - 1, 0)
  np.testing.assert_allclose(last, states[np.arange(B), rows], **TOL)
  np.testing.assert_allclose(serving_cache.keys, cache.keys, **TOL)


def test_masking_an_action_hides_its_outcome_only(model_and_params):
  model, params = model_and_params
  history = _histories(1)
  masked = np.zeros((B, L), bool)
  masked[0, 2] = True
  states, _ = _encode(model, params, history, masked)
  flipped = {k: np.array(v) for k, v in history.items()}
  flipped["outcomes"][0, 2] = ~flipped["outcomes"][0, 2]
  states_flipped, _ = _encode(model, params, flipped, masked)
  # The masked outcome is invisible everywhere...
  np.testing.assert_allclose(states_flipped, states, **TOL)
  # ...while an unmasked one changes its own and later states.
  unmasked, _ = _encode(model, params, flipped)
  reference, _ = _encode(model, params, history)
  assert np.max(np.abs(unmasked[0, 2:] - reference[0, 2:])) > 1e-3


def test_candidate_score_does_not_depend_on_other_candidates(model_and_params):
  model, params = model_and_params
  history = _histories(2)
  rng = np.random.default_rng(3)
  candidates = rng.integers(1, 51, (B, C)).astype(np.int32)
  request_times = np.repeat(history["times"].max(1, keepdims=True) + 60.0, C, axis=1)
  prefix = np.repeat(history["lengths"][:, None], C, axis=1)
  scores = _rank(model, params, history, candidates, request_times, prefix)
  others = candidates.copy()
  others[:, 1:] = rng.integers(1, 51, (B, C - 1))
  scores_others = _rank(model, params, history, others, request_times, prefix)
  np.testing.assert_allclose(scores_others[:, 0], scores[:, 0], **TOL)
  reordered = candidates[:, ::-1]
  scores_reordered = _rank(model, params, history, reordered, request_times, prefix)
  np.testing.assert_allclose(scores_reordered[:, ::-1], scores, **TOL)


def test_cached_ranking_equals_full_forward_of_history_plus_candidate(model_and_params):
  """Ranking on the cache == encoding [history, masked candidate] as one causal sequence."""
  model, params = model_and_params
  history = _histories(4)
  rng = np.random.default_rng(5)
  candidates = rng.integers(1, 51, (B, C)).astype(np.int32)
  request_times = (history["times"].max(1, keepdims=True) + rng.exponential(600.0, (B, C))).astype(
    np.float32
  )
  surfaces = rng.integers(0, 2, (B, C)).astype(np.int32)
  prefix = np.repeat(history["lengths"][:, None], C, axis=1)
  cached = _rank(model, params, history, candidates, request_times, prefix, surfaces)

  def full_forward(module, c):
    """One sequence of length+1 tokens per user: the history, then candidate c, masked."""
    rows = []
    for b in range(B):
      n = int(history["lengths"][b])
      items = np.concatenate([history["items"][b, :n], candidates[b, c : c + 1]])
      outcomes = np.concatenate([history["outcomes"][b, :n], np.zeros((1, O), bool)])
      times = np.concatenate([history["times"][b, :n], request_times[b, c : c + 1]])
      surface = np.concatenate([history["surfaces"][b, :n], surfaces[b, c : c + 1]])
      masked = np.arange(n + 1) == n
      states, _ = module.encode(
        items[None], outcomes[None], times[None], surface[None], jnp.array([n + 1]), masked[None]
      )
      rows.append(module.task_logits(states[0, n], candidates[b, c]))
    return jnp.stack(rows)

  for c in range(C):
    full = model.apply({"params": params}, c, method=full_forward)
    np.testing.assert_allclose(cached[:, c], full, **TOL)


def test_blended_pass_equals_serving_path(model_and_params):
  """Training's one-pass slate logits equal ranking each slate on its own history prefix."""
  model, params = model_and_params
  history = _histories(6)
  rng = np.random.default_rng(7)
  slate_prefix = np.array([[3, 8], [2, 5], [1, 0]], np.int32)  # 0: a padding slate
  slate_items = rng.integers(1, 51, (B, S, C)).astype(np.int32)
  slate_times = np.take_along_axis(history["times"], np.maximum(slate_prefix - 1, 0), 1) + 30.0
  batch = TrainBatch(
    items=history["items"],
    outcomes=history["outcomes"],
    times=history["times"],
    surfaces=history["surfaces"],
    history_lengths=history["lengths"],
    slate_prefix=slate_prefix,
    slate_times=slate_times,
    slate_surfaces=np.ones((B, S), np.int32),
    slate_items=slate_items,
    slate_outcomes=np.zeros((B, S, C, O), bool),
  )
  outputs = _apply(model, params, batch, jnp.zeros((B, L), bool))
  for s in range(S):
    for b in range(B):
      n = int(slate_prefix[b, s])
      if n == 0:
        continue
      prefix_history = {k: v[b : b + 1] for k, v in history.items()}
      prefix_history["lengths"] = np.array([n], np.int32)
      alone = _rank(
        model,
        params,
        prefix_history,
        slate_items[b : b + 1, s],
        np.full((1, C), slate_times[b, s], np.float32),
        np.full((1, C), n, np.int32),
        surfaces=np.ones((1, C), np.int32),
      )
      np.testing.assert_allclose(outputs.candidate_task_logits[b, s], alone[0], **TOL)


def test_outcome_condition_changes_the_query(model_and_params):
  model, params = model_and_params
  states, _ = _encode(model, params, _histories(8))
  last = states[:, -1]
  conditions = jnp.arange(model.config.num_conditions)
  queries = _apply(model, params, last[:, None, :], conditions[None, :], method=model.queries)
  np.testing.assert_allclose(np.linalg.norm(queries, axis=-1), 1.0, rtol=1e-4)
  for a in range(model.config.num_conditions):
    for b in range(a + 1, model.config.num_conditions):
      assert np.max(np.abs(queries[:, a] - queries[:, b])) > 1e-3


def test_served_scores_are_the_training_logits_times_temperature():
  """With the item bias, [query, 1] . [unit item, temperature x bias] = temperature x logit."""
  config = ModelConfig(
    num_items=50,
    num_outcomes=O,
    max_length=L,
    embed_dim=16,
    action_dim=8,
    item_bias=True,
    dropout_rate=0.0,
    offsets_seconds=(0.0,),
    relative_position_buckets=0,
    exclusive_outcomes=False,
  )
  model = UniPinRec(config)
  batch = example_batch(model, B, S, C)
  params = initial_params(model, batch)
  bias = params["tokenizer"]["item_bias"]
  params["tokenizer"]["item_bias"] = jax.random.normal(jax.random.key(1), bias.shape)
  outputs = _apply(model, params, batch, jnp.zeros((B, L), bool), deterministic=True)
  table = np.asarray(
    _apply(model, params, jnp.arange(config.num_items + 1), method=model.encode_items)
  )
  unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
  logits = (
    np.einsum("blqd,nd->blqn", outputs.queries, unit) / config.temperature
    + np.asarray(outputs.item_bias)[: config.num_items + 1]
  )
  states, _ = _apply(model, params, *_batch_history(batch), method=model.encode)
  conditions = jnp.arange(config.num_conditions)
  queries = _apply(
    model, params, states[:, :, None, :], conditions[None, None, :], method=model.queries
  )
  vectors = _apply(model, params, method=model.item_vectors)
  assert queries.shape[-1] == vectors.shape[-1] == config.score_dim == 17
  served = np.einsum("blqs,ns->blqn", queries, vectors)
  np.testing.assert_allclose(served, config.temperature * logits, rtol=1e-4, atol=1e-5)
  assert np.ptp(np.asarray(outputs.item_bias)[1:51]) > 1.0  # the bias is not a constant


def _batch_history(batch: TrainBatch) -> tuple:
  return batch.items, batch.outcomes, batch.times, batch.surfaces, batch.history_lengths


def test_relative_buckets_match_hand_computed_values():
  """Half the buckets exact, half logarithmic up to max_distance, the rest in the last."""
  distance = jnp.array([0, 1, 3, 4, 10, 24, 50, 100, 1000])
  buckets = attention.relative_buckets(distance, num_buckets=8, max_distance=100)
  # d >= 4: 4 + floor(log(d / 4) / log(25) * 4), capped at 7.
  np.testing.assert_array_equal(buckets, [0, 1, 3, 4, 5, 6, 7, 7, 7])
  # A window no longer than the exact half: one bucket per distance, capped.
  short = attention.relative_buckets(jnp.arange(6), num_buckets=8, max_distance=3)
  np.testing.assert_array_equal(short, [0, 1, 2, 3, 4, 5])


def test_negative_relative_buckets_are_refused():
  with pytest.raises(ValueError, match="relative_position_buckets must be 0"):
    ModelConfig(
      num_items=5,
      num_outcomes=2,
      relative_position_buckets=-1,
      dropout_rate=0.0,
      offsets_seconds=(0.0,),
      exclusive_outcomes=False,
    )


def test_exclusive_outcome_probabilities_are_a_softmax_against_none():
  logits = np.array([[0.3, -1.2], [2.0, 1.0], [-4.0, 0.5]], np.float32)
  got = np.asarray(heads.outcome_probabilities(jnp.asarray(logits), exclusive=True))
  e = np.exp(logits.astype(np.float64))
  np.testing.assert_allclose(got, e / (1.0 + e.sum(-1, keepdims=True)), rtol=1e-6)
  assert (got.sum(-1) < 1.0).all()  # what is left is P(none)
  # One outcome: the softmax against none is the sigmoid of the independent heads.
  np.testing.assert_allclose(
    np.asarray(heads.outcome_probabilities(jnp.asarray(logits[:, :1]), exclusive=True)),
    np.asarray(heads.outcome_probabilities(jnp.asarray(logits[:, :1]), exclusive=False)),
    rtol=1e-6,
  )


def test_concat_dense_equals_dense_on_the_concatenation():
  # The retrieval head multiplies a state once for all its conditions: same parameters, same
  # numbers as nn.Dense on the broadcast concatenation.
  a = jax.random.normal(jax.random.key(0), (3, 5, 1, 7))
  b = jax.random.normal(jax.random.key(1), (1, 1, 4, 2))
  layer = heads.ConcatDense(6, kernel_axes=(None, "mlp"))
  params = layer.init(jax.random.key(2), a, b)
  params = jax.tree.map(lambda x: x + 0.1, nn.unbox(params))  # a non-zero bias too
  both = jnp.concatenate(
    [jnp.broadcast_to(a, (3, 5, 4, 7)), jnp.broadcast_to(b, (3, 5, 4, 2))], axis=-1
  )
  expected = nn.Dense(6).apply(params, both)
  np.testing.assert_allclose(layer.apply(params, a, b), expected, rtol=1e-5, atol=1e-5)


def test_task_heads_equal_one_mlp_per_outcome():
  config = ModelConfig(
    num_items=10,
    embed_dim=4,
    action_dim=2,
    num_outcomes=3,
    head_hidden_dim=5,
    dropout_rate=0.0,
    offsets_seconds=(0.0,),
    relative_position_buckets=0,
    exclusive_outcomes=False,
  )
  states = jax.random.normal(jax.random.key(0), (2, 7, config.width))
  vectors = heads.l2_normalize(jax.random.normal(jax.random.key(1), (2, 7, config.embed_dim)))
  layer = heads.TaskHeads(config)
  params = jax.tree.map(lambda x: x + 0.1, nn.unbox(layer.init(jax.random.key(2), states, vectors)))
  p = params["params"]
  features = jnp.concatenate([states, states[..., : config.embed_dim] * vectors], axis=-1)
  expected = jnp.stack(
    [
      nn.gelu(features @ p["hidden_kernel"][:, o] + p["hidden_bias"][o]) @ p["out_kernel"][o]
      + p["out_bias"][o]
      for o in range(config.num_outcomes)
    ],
    axis=-1,
  )
  np.testing.assert_allclose(layer.apply(params, states, vectors), expected, rtol=1e-5, atol=1e-5)
