"""The world whose items are computed from their ids: deterministic, bounded in memory whatever
the catalogue, and drawn from the model it claims."""

import dataclasses
import tracemalloc

import numpy as np
import pytest

from unipinrec.data import generated_items as gen_lib
from unipinrec.data import synthetic_at_scale as scale_lib
from unipinrec.data.synthetic import SyntheticConfig
from unipinrec.data.synthetic_behaviour import examination, outcome_probs
from unipinrec.data.synthetic_sampling import zipf_ranks

HUGE = SyntheticConfig(
  num_users=200,
  num_items=10**8,
  num_topics=6,
  requests_per_user=20,
  policy_pool=200,
  content_dim=16,
  seed=3,
  items_from_ids=True,
)


@pytest.fixture(scope="module")
def world():
  return scale_lib.generate_world_at_scale(HUGE)


def _arrays(logs):
  return {f.name: np.asarray(getattr(logs, f.name)) for f in dataclasses.fields(logs)}


def test_same_seed_same_world_other_seed_other_world(world):
  again = scale_lib.generate_world_at_scale(HUGE)
  for name, value in _arrays(world.logs).items():
    np.testing.assert_array_equal(_arrays(again.logs)[name], value, name)
  other = scale_lib.generate_world_at_scale(dataclasses.replace(HUGE, seed=4))
  assert not np.array_equal(other.logs.slate_items[:50], world.logs.slate_items[:50])


def test_items_in_range_and_slates_without_repeats(world):
  logs = world.logs
  assert logs.num_items == HUGE.num_items and logs.num_users == HUGE.num_users
  assert logs.slate_items.min() >= 1 and logs.slate_items.max() <= HUGE.num_items
  ranked = np.sort(logs.slate_items, axis=1)
  assert not np.any(ranked[:, 1:] == ranked[:, :-1])
  assert np.all(np.diff(logs.action_offsets) >= HUGE.min_actions)
  assert logs.slate_items.max() > 10**6  # the tail of the catalogue is shown too


def test_no_user_is_shown_an_item_engaged_with_before(world):
  logs = world.logs
  for user in range(logs.num_users):
    actions = logs.action_items[logs.action_offsets[user] : logs.action_offsets[user + 1]]
    assert len(np.unique(actions)) == len(actions), user
    # Each slate after the user's first k actions holds none of them.
    first, last = logs.slate_offsets[user], logs.slate_offsets[user + 1]
    for slate in range(first, last):
      earlier = actions[: logs.slate_prefix[slate]]
      assert not np.isin(logs.slate_items[slate], earlier).any(), (user, slate)


def test_chunks_join_into_consistent_logs(monkeypatch):
  monkeypatch.setattr(scale_lib, "CHUNK_USERS", 16)
  config = dataclasses.replace(HUGE, num_users=40, requests_per_user=8, min_actions=2)
  logs = scale_lib.generate_world_at_scale(config).logs
  assert logs.num_users == 40 and len(logs.slate_items) == 40 * 8
  assert logs.action_offsets[-1] == len(logs.action_items)
  for user in range(40):
    actions = slice(logs.action_offsets[user], logs.action_offsets[user + 1])
    slates = slice(logs.slate_offsets[user], logs.slate_offsets[user + 1])
    engaged = logs.slate_outcomes[slates].any(-1)
    np.testing.assert_array_equal(logs.slate_items[slates][engaged], logs.action_items[actions])
    before = np.searchsorted(logs.action_times[actions], logs.slate_times[slates], side="left")
    np.testing.assert_array_equal(logs.slate_prefix[slates], before)
  # Chunks draw from streams of their own: users 16.. are not users 0.. again.
  assert not np.array_equal(logs.slate_items[:8], logs.slate_items[16 * 8 : 24 * 8])


def test_peak_memory_does_not_grow_with_the_catalogue():
  peaks = []
  # Only the number of distinct pool items grows, with log N; one [N] array at 10^8 is 400 MB.
  for num_items in (10**6, 10**8):
    config = dataclasses.replace(HUGE, num_items=num_items, num_users=100, requests_per_user=5)
    tracemalloc.start()
    scale_lib.generate_world_at_scale(config)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
  assert peaks[1] < 1.3 * peaks[0] and peaks[1] < 32 * 2**20


def test_engagement_follows_the_true_model():
  """The logged engagement matches the outcome model on the computed items and the logged
  interests; saves favour quality."""
  centres, items = scale_lib._topics_and_items(HUGE)
  chunk = scale_lib.simulate_chunk(HUGE, centres, items, 0)
  slates = chunk.slates.reshape(-1, HUGE.slate_size)
  engage, save = outcome_probs(
    HUGE,
    chunk.interests.reshape(-1, HUGE.latent_dim).astype(np.float64),
    gen_lib.vectors(items, slates),
    gen_lib.log_popularity(items, slates),
    gen_lib.quality(items, slates),
    chunk.surfaces.reshape(-1),
  )
  engaged = chunk.outcomes.reshape(len(slates), HUGE.slate_size, 2).any(-1)
  expected = (engage * examination(HUGE)).sum()
  assert abs(engaged.sum() / expected - 1.0) < 0.05
  saved = chunk.outcomes.reshape(len(slates), HUGE.slate_size, 2)[..., 1]
  assert abs(saved.sum() / (engaged * save).sum() - 1.0) < 0.1
  quality = gen_lib.quality(items, slates)
  assert quality[saved].mean() > quality[engaged & ~saved].mean() + 0.3


def test_zipf_ranks_follow_the_power_law():
  rng = np.random.default_rng(0)
  for exponent in (0.8, 1.0, 1.2):
    ranks = zipf_ranks(rng.random(400_000), 10**8, exponent)
    assert ranks.min() >= 1 and ranks.max() <= 10**8
    share = np.mean(ranks == 1) / np.mean(ranks == 2)
    assert abs(share / 2**exponent - 1.0) < 0.05
    # The tail past the exact head: P(rank > 10^4) by the sum's integral approximation.
    masses = np.arange(1.0, 10**4 + 1) ** -exponent
    if exponent == 1.0:
      tail = np.log((10**8 + 0.5) / (10**4 + 0.5))
    else:
      tail = ((10**8 + 0.5) ** (1 - exponent) - (10**4 + 0.5) ** (1 - exponent)) / (1 - exponent)
    expected = tail / (masses.sum() + tail)
    assert abs(np.mean(ranks > 10**4) - expected) < 0.005
  small = zipf_ranks(rng.random(10_000), np.full(10_000, 3), 1.0)
  np.testing.assert_allclose(np.bincount(small)[1:] / 10_000, [6 / 11, 3 / 11, 2 / 11], atol=0.02)


def test_content_noise_and_engaged_content_carry_the_interest(world):
  items = world.items
  sample = np.arange(1, 4097)
  noisy = gen_lib.content_from_arrays(sample, items.arrays())
  exact = gen_lib.content_from_arrays(
    sample, dataclasses.replace(items, content_scale=0.0).arrays()
  )
  ratio = np.sqrt(np.mean((noisy - exact) ** 2) / np.mean(exact**2))
  assert abs(ratio - HUGE.content_noise) < 0.02
  # A linear read of the content recovers item vectors; engaged items' point at the interest.
  rng = np.random.default_rng(1)
  train = rng.integers(1, HUGE.num_items + 1, 3000)
  decode, *_ = np.linalg.lstsq(
    gen_lib.content_from_arrays(train, items.arrays()), gen_lib.vectors(items, train), rcond=None
  )
  centres, _ = scale_lib._topics_and_items(HUGE)
  chunk = scale_lib.simulate_chunk(HUGE, centres, items, 0)
  engaged = chunk.outcomes.any(-1)  # [R, U, C]
  interests = np.broadcast_to(chunk.interests[:, :, None, :], engaged.shape + (HUGE.latent_dim,))

  def cosine(ids, targets):
    read = gen_lib.content_from_arrays(ids, items.arrays()) @ decode
    read /= np.linalg.norm(read, axis=-1, keepdims=True)
    return np.mean(np.sum(read * targets, axis=-1))

  random_ids = rng.integers(1, HUGE.num_items + 1, engaged.sum())
  on_engaged = cosine(chunk.slates[engaged], interests[engaged])
  assert on_engaged > cosine(random_ids, interests[engaged]) + 0.3


def test_unsupported_knobs_are_refused():
  for knobs in ({"revisit": 0.1}, {"multi_interest": True}, {"session_momentum": 0.5}):
    with pytest.raises(ValueError, match=next(iter(knobs))):
      scale_lib.generate_world_at_scale(dataclasses.replace(HUGE, **knobs))
