"""The item table's co-occurrence warm start: what its rows mean, and where they land."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from unipinrec.config import ItemInitConfig
from unipinrec.train import item_init
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
