"""Generation: budget quotas, merging, de-duplication, offset targets and multi-token queries."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unipinrec import losses, positives
from unipinrec.config import StepConfig
from unipinrec.evaluation import metrics, plots
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.serving import budgets, generation
from unipinrec.train import step as step_lib
from unipinrec.train.state import example_batch, initial_params
from unipinrec.types import Histories

B, L, O, N = 4, 8, 2, 40
NAMES = ("click", "save")
OFFSETS = (0.0, 100.0, 1000.0, 10000.0)


@pytest.fixture(scope="module")
def model_and_params():
  model = UniPinRec(
    ModelConfig(
      num_items=N,
      num_outcomes=O,
      num_surfaces=2,
      max_length=L,
      embed_dim=16,
      action_dim=8,
      num_layers=1,
      num_heads=2,
      mlp_dim=32,
      head_hidden_dim=16,
      offsets_seconds=OFFSETS,
      dropout_rate=0.0,
      relative_position_buckets=0,
      exclusive_outcomes=False,
    )
  )
  batch = example_batch(model, B, 2, 3)
  params = initial_params(model, batch)
  params = jax.tree.map(
    lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape), params
  )
  return model, params


@pytest.fixture(scope="module")
def histories():
  rng = np.random.default_rng(0)
  lengths = np.array([L, 5, 1, 0], np.int32)
  items = rng.integers(1, N + 1, (B, L)).astype(np.int32)
  items[np.arange(L)[None] >= lengths[:, None]] = 0
  return Histories(
    items=items,
    outcomes=rng.random((B, L, O)) < 0.5,
    times=np.cumsum(rng.exponential(300.0, (B, L)), axis=1).astype(np.float32),
    surfaces=rng.integers(0, 2, (B, L)).astype(np.int32),
    lengths=lengths,
  )


@pytest.mark.parametrize(
  "budget, k, expected",
  [
    ({"save": 3, "click": 1}, None, ((2, 1), (3, 1))),
    ({"save": 3, "click": 1}, 10, ((2, 1), (8, 2))),  # 7.5 / 2.5: the tie goes to save
    ({"click": 1, "save": 1}, 5, ((1, 2), (3, 2))),
    ({"click": 0, "save": 2}, 7, ((2,), (7,))),
    ({"click": 1, "save": 2}, 2, ((1, 2), (1, 1))),  # 0.67 / 1.33 -> click by remainder
  ],
)
def test_split_quota(budget, k, expected):
  assert budgets.split_quota(budget, NAMES, k) == expected


def test_split_quota_rejects_unknown_and_empty():
  with pytest.raises(ValueError, match="unknown outcome"):
    budgets.split_quota({"like": 1}, NAMES)
  with pytest.raises(ValueError, match="positive total"):
    budgets.split_quota({"click": 0}, NAMES)


def test_fill_quotas_by_hand():
  ranked = jnp.array([[[5, 6, 7, 8, 9], [6, 5, 1, 2, 3]]])
  items, groups = budgets.fill_quotas(ranked, (2, 3))
  # Turns 0, 1, 0, 1, 1: 5; 6; 7 (6 is taken); 1 (5 is taken); 2.
  np.testing.assert_array_equal(items, [[5, 7, 6, 1, 2]])
  np.testing.assert_array_equal(groups, [[0, 0, 1, 1, 1]])


def test_merge_queries_serves_look_alikes_by_the_first():
  q = jnp.array([[[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]]])
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
  np.testing.assert_array_equal(budgets.merge_queries(q, 0.99), [[0, 0, 2]])
  np.testing.assert_array_equal(budgets.merge_queries(q, 0.9999), [[0, 1, 2]])
  # Served with the item bias, each query ends in a 1: only the unit part is compared.
  with_bias = jnp.concatenate([q, jnp.ones((1, 3, 1))], axis=-1)
  np.testing.assert_array_equal(budgets.merge_queries(with_bias, 0.99, 2), [[0, 0, 2]])
  assert budgets.merge_queries(with_bias, 0.99).tolist() == [[0, 0, 0]]  # the 1s compared: wrong


@pytest.mark.parametrize("merge_cosine", [0.98, -1.0])  # -1 merges every query into the first
def test_generate_respects_budgets_without_duplicates(model_and_params, histories, merge_cosine):
  model, params = model_and_params
  out = generation.generate(
    model, params, histories, {"save": 3, "click": 2}, NAMES, k=None, merge_cosine=merge_cosine
  )
  assert out.items.shape == (B, 5)
  for row, names, lengths, seen in zip(
    out.items, out.outcomes, histories.lengths, histories.items, strict=True
  ):
    assert names == ["save"] * 3 + ["click"] * 2
    assert len(set(row.tolist())) == 5 and row.min() >= 1
    assert not set(row.tolist()) & set(seen[:lengths].tolist())


def test_conditioning_changes_the_query(model_and_params):
  model, params = model_and_params
  state = jax.random.normal(jax.random.key(1), (B, model.config.width))
  queries = model.apply(
    {"params": params}, state[:, None], jnp.arange(3)[None], method=model.queries
  )
  cosine = jnp.einsum("bd,bd->b", queries[:, 1], queries[:, 2])
  assert float(cosine.max()) < 0.999
  shifted = model.apply(
    {"params": params},
    state[:, None],
    jnp.zeros((1, 2), int),
    jnp.arange(2)[None],
    method=model.queries,
  )
  np.testing.assert_allclose(shifted[:, 0], queries[:, 0], rtol=1e-6, atol=1e-6)
  assert float(jnp.einsum("bd,bd->b", shifted[:, 0], shifted[:, 1]).max()) < 0.999


def test_offset_targets_on_a_hand_made_sequence():
  times = jnp.array([[0.0, 10.0, 50.0, 200.0, 1500.0, 0.0]])
  positions, valid = positives.offset_targets(times, jnp.array([5]), (100.0, 1000.0))
  # anchor 0: first action >= 100 s later is position 3; >= 1000 s later is 4.
  # anchor 3: +100 -> 4; +1000 -> 4 (1300 s later). anchor 4: none.
  np.testing.assert_array_equal(valid[0, :5], [[1, 1], [1, 1], [1, 1], [1, 1], [0, 0]])
  np.testing.assert_array_equal(positions[0, :4], [[3, 4], [3, 4], [3, 4], [4, 4]])
  assert not bool(valid[0, 5].any())  # padding is never an anchor's target


def test_offset_targets_match_a_search_over_all_pairs():
  rng = np.random.default_rng(0)
  times = np.cumsum(rng.choice([0.0, 30.0, 500.0, 5000.0], (4, 40)), axis=1).astype(np.float32)
  lengths = np.array([40, 17, 1, 0])
  offsets = (60.0, 1000.0, 20000.0)
  positions, valid = positives.offset_targets(jnp.asarray(times), jnp.asarray(lengths), offsets)
  for b, a, t in np.ndindex(valid.shape):
    later = [c for c in range(a + 1, lengths[b]) if times[b, c] - times[b, a] >= offsets[t]]
    assert bool(valid[b, a, t]) == (a < lengths[b] and bool(later)), (b, a, t)
    if later:
      assert int(positions[b, a, t]) == later[0], (b, a, t)


def test_windowed_offset_positives_on_a_hand_made_sequence():
  times = jnp.array([[0.0, 10.0, 50.0, 200.0, 260.0, 1500.0, 0.0]])
  positions, valid = positives.offset_positives(times, jnp.array([6]), (100.0, 1000.0), 200.0, 3)
  # anchor 0, +100 s: the target (position 3, 200 s) and 260 s <= 100 + 200; not 1500 s.
  np.testing.assert_array_equal(positions[0, 0, 0, :2], [3, 4])
  np.testing.assert_array_equal(valid[0, 0, 0], [1, 1, 0])
  # anchor 0, +1000 s: position 5 (1500 s) counts although past 1000 + 200: the target always does.
  np.testing.assert_array_equal(valid[0, 0, 1], [1, 0, 0])
  assert int(positions[0, 0, 1, 0]) == 5
  # anchor 3 (200 s), +100 s: 260 s is 60 s ahead, so the target is 1500 s, alone.
  assert int(positions[0, 3, 0, 0]) == 5
  np.testing.assert_array_equal(valid[0, 3, 0], [1, 0, 0])
  assert not bool(valid[0, 5].any()) and not bool(valid[0, 6].any())
  # Without a window, the first position is `offset_targets`' target.
  first, has = positives.offset_targets(times, jnp.array([6]), (100.0, 1000.0))
  alone, alone_valid = positives.offset_positives(times, jnp.array([6]), (100.0, 1000.0), 0.0, 1)
  np.testing.assert_array_equal(alone[..., 0], first)
  np.testing.assert_array_equal(alone_valid[..., 0], has)


def test_offset_queries_are_trained(model_and_params):
  model, params = model_and_params
  batch = example_batch(model, B, 2, 3)
  times = jnp.cumsum(jnp.full((B, L), 400.0), axis=1)
  batch = batch.replace(
    items=jnp.tile(jnp.arange(1, L + 1, dtype=jnp.int32), (B, 1)),
    times=times,
    history_lengths=jnp.full((B,), L, jnp.int32),
  )
  config = StepConfig(loss=losses.LossConfig(num_random_negatives=8, num_inbatch_negatives=8))
  # Jitted: the gradient of the whole blended pass op by op took a minute.
  grads = jax.jit(
    jax.grad(
      lambda p: step_lib.blended_loss(
        p, model, config, batch, jnp.log(jnp.full((N + 1,), 1.0 / N)), jax.random.key(0)
      )[0]
    )
  )(params)
  offset_grad = grads["retrieval_head"]["offset_embedding"]
  assert offset_grad.shape == (len(OFFSETS) - 1, 16)
  assert float(optax.tree.norm(offset_grad)) > 0.0


def test_offset_loss_log_q_strength(model_and_params):
  model, params = model_and_params
  batch = example_batch(model, B, 2, 3)
  batch = batch.replace(
    items=jnp.tile(jnp.arange(1, L + 1, dtype=jnp.int32), (B, 1)),
    times=jnp.cumsum(jnp.full((B, L), 400.0), axis=1),
    history_lengths=jnp.full((B,), L, jnp.int32),
  )
  flat = jnp.log(jnp.full((N + 1,), 1.0 / N))
  skewed = jnp.log(jax.nn.softmax(jnp.linspace(0.0, 5.0, N + 1)))

  def metrics(strength: float, log_frequency: jax.Array) -> dict:
    config = StepConfig(
      loss=losses.LossConfig(
        num_random_negatives=8, num_inbatch_negatives=8, offset_logq_strength=strength
      )
    )
    loss_fn = jax.jit(step_lib.blended_loss, static_argnums=(1, 2))  # one compilation per config
    return loss_fn(params, model, config, batch, log_frequency, jax.random.key(0))[1]

  on_flat, on_skewed = metrics(1.0, flat), metrics(1.0, skewed)
  off_flat, off_skewed = metrics(0.0, flat), metrics(0.0, skewed)
  half_skewed = metrics(0.5, skewed)
  # The next-action queries keep their correction whatever the offsets do.
  assert float(off_skewed["retrieval_loss"]) == float(on_skewed["retrieval_loss"])
  assert float(half_skewed["retrieval_loss"]) == float(on_skewed["retrieval_loss"])
  assert abs(float(on_skewed["retrieval_loss"]) - float(on_flat["retrieval_loss"])) > 1e-3
  assert abs(float(on_skewed["offset_loss"]) - float(on_flat["offset_loss"])) > 1e-3
  # Uncorrected, the offset loss no longer reads the items' popularity.
  np.testing.assert_allclose(float(off_skewed["offset_loss"]), float(off_flat["offset_loss"]))
  # A partial correction is its own loss, neither the full nor the absent one.
  for other in (on_skewed, off_skewed):
    assert abs(float(half_skewed["offset_loss"]) - float(other["offset_loss"])) > 1e-4


def test_offset_log_q_strength_must_be_a_share():
  with pytest.raises(ValueError, match="offset_logq_strength=1.5"):
    losses.LossConfig(offset_logq_strength=1.5)


def test_multi_token_and_autoregressive_agree_on_the_first_vector(model_and_params, histories):
  model, params = model_and_params
  # One vector: both are the next-action query's top 5.
  np.testing.assert_array_equal(
    generation.multi_token_generator(model, 1, 5)(params, histories),
    generation.autoregressive_generator(model, 1, 5)(params, histories),
  )
  multi = generation.multi_token_generator(model, 3, 5)(params, histories)
  auto = generation.autoregressive_generator(model, 3, 5)(params, histories)
  assert multi.shape == auto.shape == (B, 3, 5)
  # The first vector picks first: its best item is the same for both.
  np.testing.assert_array_equal(multi[:, 0, 0], auto[:, 0, 0])
  for lists in (multi, auto):
    flat = np.asarray(lists).reshape(B, -1)
    assert all(len(set(row.tolist())) == flat.shape[1] for row in flat)
  # The best item of step 0 is fed back, so later lists no longer hold it.
  assert not np.any(np.asarray(auto[:, 1:]) == np.asarray(auto[:, :1, :1]))
  with pytest.raises(ValueError, match="offsets"):
    generation.multi_token_generator(model, len(OFFSETS) + 1, 5)


def test_merged_offset_queries_share_the_first_query_list(model_and_params, histories):
  model, params = model_and_params
  # Cosine -1 merges every offset query into the first: the lists are its top 15.
  merged = generation.multi_token_generator(model, 3, 5, -1.0)(params, histories)
  single = generation.multi_token_generator(model, 1, 15)(params, histories)
  for row, best in zip(np.asarray(merged), np.asarray(single), strict=True):
    assert set(row.ravel().tolist()) == set(best.ravel().tolist())
  # Turns: the first query's picks are ranks 1, 4, 7, ... of the shared list.
  np.testing.assert_array_equal(merged[:, 0], single[:, 0, ::3])


def test_unordered_recall_by_hand():
  lists = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 9], [9, 9]]])
  future = np.array([[4, 10, 0], [11, 0, 0], [0, 0, 0]])  # the third user has no future
  out = metrics.unordered_recall(lists, future)
  assert out == {"recall": pytest.approx(0.25), "hit_rate": pytest.approx(0.5)}


def test_list_diversity_by_hand():
  vectors = np.array([[0, 0], [1, 0], [0, 1], [-1, 0]], np.float64)
  lists = np.array([[1, 2, 2], [1, 3, 0]])  # repeats and padding count once / not at all
  out = metrics.list_diversity(lists, vectors, num_items=3)
  # Distinct entries: {1, 2} and {1, 3} -> 3 distinct of 4; distances 1 (orthogonal) and 2.
  assert out == {
    "unique_share": pytest.approx(0.75),
    "coverage": pytest.approx(1.0),
    "intra_list_distance": pytest.approx(1.5),
  }


def test_plots_are_written(tmp_path):
  rows = [
    {"method": m, "vectors": v, "recall": 0.1 * v, "unique_share": 0.5, "vectors_per_second": 10.0}
    for m in ("multi_token", "autoregressive")
    for v in (1, 2)
  ]
  rates = {"true_click_rate": 0.2, "true_save_rate": 0.1}
  conditioning = {
    "k": 5,
    "oracle_best": {"click": rates, "save": rates},
    "budgets": [dict(rates, save_fraction=f, hr=0.1) for f in (0.0, 1.0)],
  }
  paths = plots.plot_generation({"tokens": rows, "conditioning": conditioning}, str(tmp_path))
  assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["budgets.png", "generation_tokens.png"]
  assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)
