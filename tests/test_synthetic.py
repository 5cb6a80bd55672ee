"""The synthetic world: deterministic, consistent, and with the structure it claims."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from unipinrec.data import examples as examples_lib
from unipinrec.data import synthetic_revisit as revisit_lib
from unipinrec.data.synthetic import SyntheticConfig, examination, generate_world
from unipinrec.data.synthetic_history import history_interests

SMALL = SyntheticConfig(num_users=150, num_items=800, num_topics=6, requests_per_user=30, seed=3)


@pytest.fixture(scope="module")
def world():
  return generate_world(SMALL)


def _arrays(logs):
  return {f.name: getattr(logs, f.name) for f in dataclasses.fields(logs)}


def test_same_seed_same_world_other_seed_other_world(world):
  again = generate_world(SMALL)
  for name, value in _arrays(world.logs).items():
    np.testing.assert_array_equal(np.asarray(getattr(again.logs, name)), np.asarray(value), name)
  np.testing.assert_array_equal(again.request_interests, world.request_interests)
  other = generate_world(dataclasses.replace(SMALL, seed=4))
  assert not np.array_equal(other.logs.action_items[:100], world.logs.action_items[:100])


def test_logs_are_consistent(world):
  logs = world.logs
  assert logs.num_users == SMALL.num_users
  assert np.all(np.diff(logs.action_offsets) >= SMALL.min_actions)
  assert logs.action_items.min() >= 1 and logs.action_items.max() <= SMALL.num_items
  assert np.all(logs.action_outcomes.sum(-1) == 1)  # exactly one of click, save
  for user in range(0, logs.num_users, 17):
    actions = slice(logs.action_offsets[user], logs.action_offsets[user + 1])
    slates = slice(logs.slate_offsets[user], logs.slate_offsets[user + 1])
    assert np.all(np.diff(logs.action_times[actions]) >= 0)
    # Engaged slate items are exactly the user's actions, in order.
    engaged = logs.slate_outcomes[slates].any(-1)
    np.testing.assert_array_equal(logs.slate_items[slates][engaged], logs.action_items[actions])
    # A slate's prefix counts the actions strictly before its request.
    request_times = logs.slate_times[slates]
    before = np.searchsorted(logs.action_times[actions], request_times, side="left")
    np.testing.assert_array_equal(logs.slate_prefix[slates], before)
    # The policy never re-shows an item the user engaged with before.
    items = logs.action_items[actions]
    assert len(np.unique(items)) == len(items)


def test_position_bias_and_true_probabilities(world):
  logs = world.logs
  engaged = logs.slate_outcomes.any(-1)  # [S, C]
  rate = engaged.mean(0)
  assert rate[0] > 1.5 * rate[-1]  # engagement falls with position
  # The true probabilities explain the logged engagement: calibrated within 10%.
  probs = world.true_outcome_probs(np.arange(len(logs.slate_items)), logs.slate_items)
  expected = (probs.sum(-1) * examination(SMALL)).sum()
  assert abs(engaged.sum() / expected - 1.0) < 0.1
  # Saves favour quality: the mean quality of saved items exceeds that of clicked ones.
  actions = logs.action_outcomes
  quality = world.item_quality[logs.action_items]
  assert quality[actions[:, 1]].mean() > quality[actions[:, 0]].mean() + 0.3


def test_oracle_beats_popularity_on_ranking(world):
  """The world is not popularity-dominated: the truth ranks slates far better."""
  from unipinrec.evaluation import evaluate

  train_users, eval_users = examples_lib.split_users(world.logs.num_users, 0.3, 0)
  held_out = examples_lib.evaluation_examples(world.logs, eval_users, 16, 5)
  log_frequency = examples_lib.item_log_frequency(world.logs, train_users)
  oracle = evaluate.evaluate_oracle(world, held_out, world.logs.outcome_names)
  popularity = evaluate.evaluate_popularity(held_out, log_frequency, world.logs.outcome_names)
  assert oracle["ranking"]["auc_engaged"] > popularity["ranking"]["auc_engaged"] + 0.1
  assert oracle["retrieval"]["hr@10"] > popularity["retrieval"]["hr@10"]
  # The oracle that only knows the history's items sits between the two on ranking: it still
  # knows the true item vectors and outcome model, but not the user's current interest.
  history = evaluate.evaluate_history_oracle(world, held_out, world.logs.outcome_names)
  auc = history["ranking"]["auc_engaged"]
  assert popularity["ranking"]["auc_engaged"] + 0.05 < auc < oracle["ranking"]["auc_engaged"]


def test_history_interests_weight_the_current_session():
  """Hand-made history: two sessions; the estimate leans to the later one's item."""
  vectors = np.zeros((4, 3))
  vectors[1:] = np.eye(3)
  fake = SimpleNamespace(item_vectors=vectors)
  history = {
    "items": np.array([[1, 2, 0]]),
    "times": np.array([[0.0, 10_000.0, 10_000.0]]),  # item 1, then a new session: item 2
    "history_lengths": np.array([2]),
  }
  estimate = history_interests(fake, history, np.array([10_100.0]), 0.5, 1.0)
  # Item 1 is one session back (weight 0.5), item 2 in the request's session (weight 1).
  np.testing.assert_allclose(estimate, [[0.5, 1.0, 0.0]] / np.sqrt(1.25))


def _interest_to_previous_action(world) -> float:
  """Mean cosine of a request's true interest with the user's action just before it."""
  logs = world.logs
  cosines = []
  for request, prefix in enumerate(logs.slate_prefix):
    user = world.request_users[request]
    if prefix == 0 or request == logs.slate_offsets[user]:
      continue
    previous = logs.action_offsets[user] + prefix - 1
    if logs.slate_times[request] - logs.action_times[previous] > 3600:  # another session
      continue
    item = logs.action_items[previous]
    cosines.append(world.request_interests[request] @ world.item_vectors[item])
  return float(np.mean(cosines))


def test_session_momentum_pulls_requests_towards_the_last_action(world):
  leaning = generate_world(dataclasses.replace(SMALL, session_momentum=1.0))
  # Before any engagement the world is the same: momentum only acts inside sessions.
  np.testing.assert_array_equal(leaning.request_interests[0], world.request_interests[0])
  assert _interest_to_previous_action(leaning) > _interest_to_previous_action(world) + 0.1


def test_multi_interest_sessions_resume_one_of_the_users_interests():
  # Without drift or jumps a user's interests are fixed: one per topic of the mix.
  still = dataclasses.replace(SMALL, drift=0.0, jump_prob=0.0)
  distinct = {}
  for multi in (False, True):
    w = generate_world(dataclasses.replace(still, multi_interest=multi))
    per_user = w.request_interests.reshape(SMALL.num_users, SMALL.requests_per_user, -1)
    distinct[multi] = np.array([len(np.unique(u.round(9), axis=0)) for u in per_user])
  assert np.all(distinct[False] == 1)
  assert distinct[True].max() <= SMALL.max_user_topics
  assert np.mean(distinct[True] > 1) > 0.4  # two thirds of users have 2-3 topics


def test_save_affinity_makes_saves_follow_the_users_interest(world):
  """P(save | engaged) tracks P(engage) (which follows affinity) only when save_affinity is on."""

  def correlation(w) -> float:
    logs = w.logs
    probs = w.true_outcome_probs(np.arange(len(logs.slate_items)), logs.slate_items)
    engaged = probs.sum(-1)
    shown = (logs.slate_items > 0) & (engaged > 0)
    save_share = probs[..., 1][shown] / engaged[shown]
    return float(np.corrcoef(engaged[shown], save_share)[0, 1])

  keen = generate_world(dataclasses.replace(SMALL, save_affinity=3.0))
  assert correlation(keen) > correlation(world) + 0.3


RETURNING = dataclasses.replace(SMALL, revisit=0.5)


@pytest.fixture(scope="module")
def returning_world():
  return generate_world(RETURNING)


def _earlier(world, requests: np.ndarray) -> list[np.ndarray]:
  """The items each request's user engaged with before it, oldest first."""
  logs = world.logs
  starts = logs.action_offsets[world.request_users[requests]]
  return [
    logs.action_items[s : s + n] for s, n in zip(starts, logs.slate_prefix[requests], strict=True)
  ]


def _shown_returns(world) -> np.ndarray:
  """[S, C] bool: slate items the user had engaged with before the request."""
  logs = world.logs
  earlier = _earlier(world, np.arange(len(logs.slate_items)))
  return np.stack([np.isin(s, h) & (s > 0) for s, h in zip(logs.slate_items, earlier, strict=True)])


def test_revisit_zero_is_the_world_without_returns(world, returning_world, monkeypatch):
  # Revisit 0 never reaches the returns' code: the world is the one drawn before returns existed.
  def no_returns(*args, **kwargs):
    raise AssertionError("revisit 0 drew returns")

  monkeypatch.setattr(revisit_lib, "draw_returns", no_returns)
  again = generate_world(SMALL)
  np.testing.assert_array_equal(again.logs.slate_items, world.logs.slate_items)
  # Returns draw from their own stream: until a user's first return request, each of the
  # user's requests shows and engages as in the world without returns.
  returns = _shown_returns(returning_world).any(1)
  offsets = world.logs.slate_offsets
  compared = 0
  for user in range(world.logs.num_users):
    requests = np.arange(offsets[user], offsets[user + 1])
    before = requests[: np.argmax(np.append(returns[requests], True))]
    compared += len(before)
    for name in ("slate_items", "slate_outcomes", "slate_times", "slate_surfaces"):
      np.testing.assert_array_equal(
        getattr(returning_world.logs, name)[before], getattr(world.logs, name)[before], name
      )
  assert compared > world.logs.num_users  # more than each user's first request
  np.testing.assert_array_equal(returning_world.item_vectors, world.item_vectors)


def test_returns_come_at_the_rate_the_truth_implies(returning_world):
  logs = returning_world.logs
  returns = _shown_returns(returning_world)
  with_history = logs.slate_prefix > 0
  # Half the requests of users with earlier actions are returns, and show only earlier items.
  assert abs(returns.any(1)[with_history].mean() - RETURNING.revisit) < 0.03
  np.testing.assert_array_equal(returns.any(1), (returns | (logs.slate_items == 0)).all(1))
  # Users engage with a return slate by the outcome model: the share of engagements that
  # return is what the true probabilities of the slates shown imply.
  engaged = logs.slate_outcomes.any(-1)
  share = (engaged & returns).sum() / engaged.sum()
  probs = returning_world.true_outcome_probs(np.arange(len(logs.slate_items)), logs.slate_items)
  expected = probs.sum(-1) * examination(RETURNING)
  assert share > 0.3
  assert abs(share - (expected * returns).sum() / expected.sum()) < 0.02


def test_returns_favour_recent_and_relevant_items(returning_world):
  logs = returning_world.logs
  returns = _shown_returns(returning_world)
  requests = np.flatnonzero(returns.any(1))
  recency, uniform, affinity, mean_affinity = [], [], [], []
  for request, earlier in zip(requests, _earlier(returning_world, requests), strict=True):
    distinct = list(dict.fromkeys(earlier[::-1]))  # most recent first
    if len(distinct) <= RETURNING.slate_size:
      continue  # a return shows them all
    shown = logs.slate_items[request][returns[request]]
    recency.extend(distinct.index(item) for item in shown)
    uniform.append((len(distinct) - 1) / 2)
    interest = returning_world.request_policy_interests[request]
    affinity.extend(returning_world.item_vectors[shown] @ interest)
    mean_affinity.append(np.mean(returning_world.item_vectors[distinct] @ interest))
  assert len(uniform) > 100
  # 0.98 per action favours recent items gently over this small world's short histories.
  assert np.mean(recency) < 0.85 * np.mean(uniform)
  assert np.mean(affinity) > np.mean(mean_affinity) + 0.05


def test_the_oracle_knows_returns(returning_world):
  from unipinrec.evaluation import metrics

  logs = returning_world.logs
  requests = np.arange(1, len(logs.slate_items), 8)
  engaged = logs.slate_outcomes[requests].any(-1)
  rows = np.repeat(np.arange(len(requests)), engaged.sum(1))
  targets = logs.slate_items[requests][engaged]
  earlier = _earlier(returning_world, requests)
  is_return = np.array([np.isin(t, earlier[r]) for r, t in zip(rows, targets, strict=True)])
  hits = metrics.target_ranks(returning_world.oracle_retrieval_scores(requests)[rows], targets) < 10
  # Blind to returns, the oracle scores every earlier item 0: none is in its top 10.
  blind_world = dataclasses.replace(returning_world, config=SMALL)
  blind = metrics.target_ranks(blind_world.oracle_retrieval_scores(requests)[rows], targets) < 10
  assert is_return.mean() > 0.3
  assert hits[is_return].mean() > 0.7 and not blind[is_return].any()
  # The rule "most recent earlier items first, then popular ones" is worse: the oracle also
  # knows which earlier items the user is still interested in, and which new items come.
  log_frequency = examples_lib.item_log_frequency(logs, np.arange(logs.num_users))
  recency = np.repeat(log_frequency[None] - log_frequency.max() - 1.0, len(requests), 0)
  for row, items in enumerate(earlier):
    distinct, back = np.unique(items[::-1], return_index=True)
    recency[row, distinct] = len(items) - back  # the later an item's latest action, the higher
  recency_hits = metrics.target_ranks(recency[rows], targets) < 10
  assert hits.mean() > recency_hits.mean() + 0.02


def test_held_out_return_targets_are_kept_and_ranked(returning_world):
  """The evaluation keeps a target the user engaged with before, under both protocols."""
  from unipinrec.evaluation.evaluate import oracle_ranks

  logs = returning_world.logs
  held_out = examples_lib.evaluation_examples(logs, np.arange(logs.num_users), 16, 5)
  assert len(held_out.retrieval_targets) == np.sum(np.diff(logs.action_offsets) >= 3)
  is_return = np.array(
    [
      np.isin(t, s)
      for t, s in zip(held_out.retrieval_targets, held_out.retrieval_seen, strict=True)
    ]
  )
  assert is_return.mean() > 0.3
  ranks = oracle_ranks(returning_world, held_out)
  # Chance is 10 in 800; the oracle's hits vary by 0.05 with the world's draws (about 80 returns).
  assert np.mean(ranks["retrieval_unfiltered"][is_return] < 10) > 0.35
