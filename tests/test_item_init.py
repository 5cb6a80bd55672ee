"""The co-occurrence warm start of the item id part (the id table, hashed ids): what its rows
mean, and where they land; the hashed fit against NumPy references."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from unipinrec.config import ItemInitConfig
from unipinrec.errors import ConfigError
from unipinrec.model.config import ModelConfig
from unipinrec.model.item_encoder import ItemEncoder, hash_buckets
from unipinrec.train import hashed_init, item_init
from unipinrec.train.experiment import fresh_state
from unipinrec.train.state import TrainState
from unipinrec.types import UserLogs


def _two_groups(num_users: int = 60, length: int = 12, seed: int = 0) -> list[np.ndarray]:
  """Users act on items 1..10 or on items 11..20, never on both."""
  rng = np.random.default_rng(seed)
  return [rng.integers(1, 11, length) + 10 * (user % 2) for user in range(num_users)]


def test_items_that_co_occur_get_close_rows_and_the_others_do_not():
  vectors, seen = item_init.cooccurrence_vectors(_two_groups(), 20, 4, window=2)
  assert seen.tolist() == [False] + [True] * 20
  unit = vectors[1:] / np.linalg.norm(vectors[1:], axis=1, keepdims=True)
  cosine = unit @ unit.T
  group = np.arange(20) // 10
  same = group[:, None] == group[None, :]
  off_diagonal = ~np.eye(20, dtype=bool)
  # Every item is closer to each item of its group than to any item of the other.
  assert cosine[same & off_diagonal].min() > cosine[~same].max()


def test_cooccurrence_vectors_are_a_function_of_the_seed():
  first = item_init.cooccurrence_vectors(_two_groups(), 20, 4, window=2, seed=3)[0]
  again = item_init.cooccurrence_vectors(_two_groups(), 20, 4, window=2, seed=3)[0]
  np.testing.assert_array_equal(first, again)


def _logs(sequences: list[np.ndarray], num_items: int) -> UserLogs:
  """Logs with these action sequences and nothing else the warm start reads."""
  lengths = np.array([len(s) for s in sequences])
  actions = int(lengths.sum())
  return UserLogs(
    action_offsets=np.concatenate([[0], np.cumsum(lengths)]),
    action_items=np.concatenate(sequences).astype(np.int32),
    action_outcomes=np.ones((actions, 1), bool),
    action_times=np.arange(actions, dtype=np.int64),
    action_surfaces=np.zeros(actions, np.int32),
    slate_offsets=np.zeros(len(sequences) + 1, np.int64),
    slate_prefix=np.zeros(0, np.int32),
    slate_times=np.zeros(0, np.int64),
    slate_surfaces=np.zeros(0, np.int32),
    slate_items=np.zeros((0, 1), np.int32),
    slate_outcomes=np.zeros((0, 1, 1), bool),
    num_items=num_items,
    num_surfaces=1,
    outcome_names=("click",),
  )


def test_initial_table_rows_scale_padding_and_unseen_items():
  # Items 21 and 22 exist but no training user acted on them.
  logs = _logs(_two_groups(), 22)
  config = ItemInitConfig(method="cooccurrence", window=2, stddev=0.1)
  users = np.arange(60)
  table = item_init.initial_table(logs, users, 32, 4, config)
  assert table.shape == (32, 4) and table.dtype == np.float32
  np.testing.assert_array_equal(table[23:], 0.0)  # the padding rows past N stay zero
  # Seen items: the random draw's mean row norm, stddev * sqrt(dim).
  np.testing.assert_allclose(np.linalg.norm(table[1:21], axis=1).mean(), 0.1 * 2.0, rtol=1e-5)
  vectors, _ = item_init.cooccurrence_vectors(
    [logs.action_items[logs.action_offsets[u] : logs.action_offsets[u + 1]] for u in users],
    22,
    4,
    2,
  )
  ratio = table[1:21] / vectors[1:21]
  np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-5)  # one common scale
  # Row 0 and the unseen items keep normal draws: non-zero, not the SVD's zeros.
  assert np.all(np.linalg.norm(table[[0, 21, 22]], axis=1) > 0)
  # Only the given users count: from the first group's users alone, the second
  # group's items are unseen and keep the seeded normal draws.
  first_group = item_init.initial_table(logs, users[::2], 32, 4, config)
  draws = np.random.default_rng(config.seed).normal(0.0, 0.1, (23, 4)).astype(np.float32)
  np.testing.assert_array_equal(first_group[11:23], draws[11:23])
  np.testing.assert_array_equal(first_group[0], draws[0])


def test_item_tables_are_replaced_in_their_sharding():
  mesh = Mesh(np.array(jax.devices()[:1]), ("fsdp",))
  spec = NamedSharding(mesh, PartitionSpec("fsdp", None))
  params = {
    "tokenizer": {"item_embedding": jax.device_put(jnp.zeros((8, 3)), spec), "other": 1.0},
    "head": {"w": jnp.ones(2)},
  }
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=())
  table = np.arange(24, dtype=np.float32).reshape(8, 3)
  warm = item_init.place_item_tables(state, {"item_embedding": table})
  placed = warm.params["tokenizer"]["item_embedding"]
  np.testing.assert_array_equal(np.asarray(placed), table)
  assert placed.sharding == spec
  assert warm.params["tokenizer"]["other"] == 1.0 and warm.params["head"] is params["head"]
  # Fewer rows (a catalogue's, under the padded table) fill the first rows, zeros after.
  short = item_init.place_item_tables(state, {"item_embedding": table[:5]})
  np.testing.assert_array_equal(np.asarray(short.params["tokenizer"]["item_embedding"])[5:], 0.0)
  np.testing.assert_array_equal(
    np.asarray(short.params["tokenizer"]["item_embedding"])[:5], table[:5]
  )
  for wrong in (table[:, :2], np.zeros((9, 3), np.float32)):
    with pytest.raises(ValueError, match="does not fit"):
      item_init.place_item_tables(state, {"item_embedding": wrong})


def test_unknown_method_is_refused():
  with pytest.raises(ValueError, match="item_init.method"):
    ItemInitConfig(method="svd")


def _sum_problem(items: int, rows: int, functions: int, width: int, seed: int = 0):
  """A "sum" fit: (buckets [M, k], vectors [M, w], weights [M], random tables [rows, k, w])."""
  rng = np.random.default_rng(seed)
  buckets = hash_buckets(np.arange(1, items + 1), functions, rows, xp=np)
  vectors = rng.normal(size=(items, width))
  weights = rng.integers(1, 10, items).astype(np.float64)
  return buckets, vectors, weights, rng.normal(size=(rows, functions, width))


def _weighted_error(table, buckets, vectors, weights, combine):
  """Sum over items of weight * |c_i - id part_i|^2, item by item."""
  total = 0.0
  for item, rows in enumerate(buckets):
    parts = [table[row, j] for j, row in enumerate(rows)]
    id_part = np.sum(parts, axis=0) if combine == "sum" else np.concatenate(parts)
    total += weights[item] * np.sum((vectors[item] - id_part) ** 2)
  return total


def test_one_function_without_collisions_reproduces_the_plain_table():
  logs = _logs(_two_groups(), 22)  # items 21 and 22 never acted on
  config = ItemInitConfig(method="cooccurrence", window=2, stddev=0.1)
  users = np.arange(60)
  rows = 200
  model = ModelConfig(
    num_items=22, embed_dim=4, item_id_part="hashed", hash_functions=1, hash_rows=rows
  )
  buckets = hash_buckets(np.arange(1, 21), 1, rows, xp=np)[:, 0]
  assert len(set(buckets.tolist())) == 20  # no two seen items share a row
  table, fitted, error = hashed_init.hashed_table(logs, users, model, config)
  assert table.shape == (rows, 1, 4) and table.dtype == np.float32 and fitted == 20
  plain = item_init.initial_table(logs, users, 32, 4, config)
  np.testing.assert_allclose(table[buckets, 0], plain[1:21], rtol=1e-6)
  assert error < 1e-12
  # Rows no seen item hashes to keep the normal(stddev) draw.
  draws = np.random.default_rng(config.seed).normal(0.0, 0.1, (rows, 1, 4)).astype(np.float32)
  others = np.setdiff1d(np.arange(rows), buckets)
  np.testing.assert_array_equal(table[others], draws[others])


def test_sum_beats_the_per_row_average_and_never_rises_over_sweeps():
  buckets, vectors, weights, draw = _sum_problem(items=60, rows=16, functions=2, width=3)
  assert len(np.unique(buckets[:, 0])) < 60  # items share rows
  errors = [
    _weighted_error(
      hashed_init.fit_hashed_rows(draw, buckets, vectors, weights, "sum", sweeps),
      buckets,
      vectors,
      weights,
      "sum",
    )
    for sweeps in range(1, 9)
  ]
  assert np.all(np.diff(errors) <= 1e-9)
  assert errors[-1] < errors[0]
  # The per-row average: each table's rows the weighted mean of c_i / k, independently.
  average = draw.copy()
  for j in range(2):
    for row in range(16):
      at = buckets[:, j] == row
      if at.any():
        average[row, j] = np.average(vectors[at], axis=0, weights=weights[at]) / 2
  assert errors[-1] < _weighted_error(average, buckets, vectors, weights, "sum")
  # Many sweeps reach the weighted least-squares optimum over the rows.
  design = np.zeros((60, 2 * 16))
  design[np.arange(60), buckets[:, 0]] = 1.0
  design[np.arange(60), 16 + buckets[:, 1]] = 1.0
  root = np.sqrt(weights)[:, None]
  solution = np.linalg.lstsq(design * root, vectors * root, rcond=None)[0]
  optimum = np.sum(weights[:, None] * (vectors - design @ solution) ** 2)
  many = hashed_init.fit_hashed_rows(draw, buckets, vectors, weights, "sum", sweeps=500)
  assert optimum <= errors[-1]
  np.testing.assert_allclose(
    _weighted_error(many, buckets, vectors, weights, "sum"), optimum, rtol=1e-4
  )
  # The error the module reports is the same sum.
  np.testing.assert_allclose(
    np.sum(weights[:, None] * (vectors - hashed_init.combined_rows(many, buckets, "sum")) ** 2),
    _weighted_error(many, buckets, vectors, weights, "sum"),
  )


def test_concat_rows_are_the_weighted_means_of_their_slices():
  buckets = np.array([[0, 2], [0, 1], [3, 1], [0, 2]])
  vectors = np.arange(16, dtype=np.float64).reshape(4, 4)  # slices [:, :2] and [:, 2:]
  weights = np.array([1.0, 2.0, 3.0, 4.0])
  draw = np.full((5, 2, 2), -7.0)
  table = hashed_init.fit_hashed_rows(draw, buckets, vectors, weights, "concat")
  expected = draw.copy()
  expected[0, 0] = (1 * vectors[0, :2] + 2 * vectors[1, :2] + 4 * vectors[3, :2]) / 7
  expected[3, 0] = vectors[2, :2]
  expected[2, 1] = (1 * vectors[0, 2:] + 4 * vectors[3, 2:]) / 5
  expected[1, 1] = (2 * vectors[1, 2:] + 3 * vectors[2, 2:]) / 5
  np.testing.assert_allclose(table, expected, rtol=1e-6)


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_the_fitted_id_parts_are_the_models(combine):
  """`combined_rows` reads the tables as `ItemEncoder.id_part` does."""
  config = ModelConfig(
    num_items=30, embed_dim=4, item_id_part="hashed", hash_rows=7, hash_combine=combine
  )
  width = 4 // (2 if combine == "concat" else 1)
  table = np.random.default_rng(1).normal(size=(config.hash_table_rows, 2, width))
  items = np.arange(1, 31)
  params = {"params": {"hashed_embedding": jnp.asarray(table, jnp.float32)}}
  model_parts = ItemEncoder(config).apply(params, jnp.asarray(items), method=ItemEncoder.id_part)
  buckets = hash_buckets(items, 2, 7, xp=np)
  np.testing.assert_allclose(
    hashed_init.combined_rows(table, buckets, combine), model_parts, rtol=1e-6
  )


def test_a_warm_start_of_no_id_part_is_refused():
  experiment = SimpleNamespace(
    run=SimpleNamespace(item_init=ItemInitConfig(method="cooccurrence")),
    data=SimpleNamespace(logs=_logs(_two_groups(), 20), eval_users=None, item_generator=None),
    model=SimpleNamespace(config=ModelConfig(item_id_part="none", content_dim=4)),
  )
  with pytest.raises(ConfigError, match="item_id_part='none' has none"):
    fresh_state(experiment)
