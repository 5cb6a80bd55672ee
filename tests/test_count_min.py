"""The count-min sketch of item counts: seeded hashing, its error bound against exact counts, and
the `data.logq_source` option that feeds the train step's log-Q from it."""

import dataclasses

import numpy as np
import pytest

from experiments.configs import synthetic
from unipinrec.config import from_mapping
from unipinrec.data import count_min
from unipinrec.data import examples as examples_lib
from unipinrec.data.dataset import DataConfig, logq_log_frequency, prepare_data
from unipinrec.errors import ConfigError

PRIME = count_min.PRIME


def test_hashing_is_deterministic_for_a_seed_and_in_range():
  ids = np.array([0, 1, 2, 12345, 10**9, PRIME - 2, PRIME - 1])
  first, again = count_min.CountMinSketch(97, 4, seed=7), count_min.CountMinSketch(97, 4, seed=7)
  columns = first.buckets(ids)
  assert columns.shape == (4, len(ids))
  np.testing.assert_array_equal(columns, again.buckets(ids))
  assert columns.min() >= 0 and columns.max() < 97
  other = count_min.CountMinSketch(97, 4, seed=8)
  assert not np.array_equal(other.multipliers, first.multipliers)
  # Python's integers do not overflow: the int64 arithmetic must agree with them near p.
  for row, (a, b) in enumerate(zip(first.multipliers, first.offsets, strict=True)):
    want = [((int(a) * int(x) + int(b)) % PRIME) % 97 for x in ids]
    np.testing.assert_array_equal(columns[row], want)
  with pytest.raises(ValueError, match="count-min ids must lie in"):
    first.buckets(np.array([PRIME]))
  with pytest.raises(ValueError, match="count-min ids must lie in"):
    first.buckets(np.array([-1]))


def test_a_tiny_sketch_by_hand():
  sketch = count_min.CountMinSketch(width=4, depth=2)
  # Hand-picked hashes instead of the seeded ones: row 0 is x mod 4, row 1 (2x + 1) mod 4.
  sketch.multipliers = np.array([1, 2], np.int64)
  sketch.offsets = np.array([0, 1], np.int64)
  sketch.add(np.array([1, 2, 2, 2]))  # repeated ids add up: 1 once, 2 three times
  sketch.add(np.array([1, 3, 6]), np.array([4, 1, 2]))
  # True counts 1: 5, 2: 3, 3: 1, 6: 2. Row 0 columns 1, 2, 3, 2; row 1 columns 3, 1, 3, 1.
  np.testing.assert_array_equal(sketch.table, [[0, 5, 3 + 2, 1], [0, 3 + 2, 0, 5 + 1]])
  assert sketch.total == 11
  # 2 and 6 share a column in both rows; 1 and 3 only in row 1; 4 (never added) hits column 0.
  np.testing.assert_array_equal(sketch.estimate(np.array([1, 2, 3, 6, 4])), [5, 5, 1, 5, 0])


def test_estimates_against_exact_counts_on_a_zipf_stream_stay_within_the_bound():
  eps, delta, num_ids = 1e-3, 0.01, 5000
  rng = np.random.default_rng(0)
  shares = 1.0 / np.arange(1, num_ids + 1) ** 1.1
  stream = rng.choice(num_ids, size=200_000, p=shares / shares.sum()) + 1
  sketch = count_min.CountMinSketch(
    count_min.width_for_error(eps), count_min.depth_for_error(delta), seed=3
  )
  assert (sketch.width, sketch.depth) == (2719, 5)
  for chunk in np.array_split(stream, 7):
    sketch.add(chunk)
  ids = np.arange(1, num_ids + 1)
  exact = np.bincount(stream, minlength=num_ids + 1)[1:]
  estimates = sketch.estimate(ids)
  assert sketch.total == len(stream)
  assert (estimates >= exact).all()
  assert (estimates > exact).any()  # more ids than columns: the bound is under test, not idle
  over_bound = np.mean(estimates - exact > eps * sketch.total)
  assert over_bound <= delta


def test_sketch_log_frequency_is_the_exact_one_when_wide_and_never_below_it():
  rng = np.random.default_rng(1)
  num_items = 300
  stream = rng.integers(0, num_items + 1, size=5000)  # 0 is padding, in neither count
  counts = np.bincount(stream, minlength=num_items + 1).astype(np.float64)
  counts[0], counts[1:] = 0.0, counts[1:] + 1.0
  with np.errstate(divide="ignore"):
    exact = np.log(counts / counts.sum())
  chunks = np.array_split(stream, 9)
  wide = count_min.sketch_log_frequency(chunks, num_items, width=1 << 16, depth=4)
  narrow = count_min.sketch_log_frequency(chunks, num_items, width=16, depth=2)
  assert wide.dtype == np.float32 and wide.shape == (num_items + 1,)
  assert wide[0] == narrow[0] == -np.inf
  np.testing.assert_allclose(wide[1:], exact[1:], atol=1e-5)
  assert (narrow[1:] >= exact[1:] - 1e-5).all()
  assert np.abs(narrow[1:] - exact[1:]).max() > 0.1


def _runlocal_data_config(**changes) -> DataConfig:
  data = from_mapping(synthetic.get_config("runlocal").to_dict()).data
  return dataclasses.replace(data, **changes)


def test_the_count_min_option_feeds_log_q_and_leaves_popularity_exact():
  wide = _runlocal_data_config(logq_source="count_min", count_min_width=1 << 16, count_min_depth=4)
  data = prepare_data(wide, max_length=16, seed=0)
  exact, sketched = data.item_log_frequency, data.logq_log_frequency
  assert sketched is not exact and sketched.shape == exact.shape
  assert exact[0] == sketched[0] == -np.inf
  np.testing.assert_allclose(sketched[1:], exact[1:], atol=1e-3)

  logs = data.logs
  train_users = np.setdiff1d(np.arange(logs.num_users), data.eval_users)
  chunks = list(examples_lib.action_item_chunks(logs, train_users, chunk_actions=100))
  assert len(chunks) > 1
  rows = np.concatenate(
    [np.arange(logs.action_offsets[u], logs.action_offsets[u + 1]) for u in train_users]
  )
  np.testing.assert_array_equal(np.concatenate(chunks), logs.action_items[rows])
  # The default is today's exact counts: the same array for log-Q and popularity.
  assert logq_log_frequency(DataConfig(), logs, train_users, 0, exact) is exact
  # A narrow sketch overestimates: its shares move, never below the exact ones.
  narrow = dataclasses.replace(wide, count_min_width=8, count_min_depth=2)
  narrow_shares = logq_log_frequency(narrow, logs, train_users, 0, exact)
  assert (narrow_shares[1:] >= exact[1:] - 1e-5).all()
  assert np.abs(narrow_shares[1:] - exact[1:]).max() > 1e-3


@pytest.mark.parametrize(
  ("data", "message"),
  [
    ({"logq_source": "sketch"}, "data.logq_source='sketch'; expected one of"),
    ({"count_min_width": 0}, "data.count_min_width=0; expected 1 to 2147483646 counters"),
    ({"count_min_width": PRIME}, f"data.count_min_width={PRIME}; expected 1 to"),
    ({"count_min_depth": 0}, "data.count_min_depth=0; expected at least 1 hash row"),
  ],
)
def test_bad_log_q_settings_are_refused_with_their_field(data, message):
  with pytest.raises(ConfigError, match=message):
    from_mapping({"data": data})
