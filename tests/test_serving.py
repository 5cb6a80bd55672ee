"""The Recommender against exact search + the blended forward; cold start, unknown ids, refusal."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hang_guard import HANG_SECONDS
from serving_models import noisy_serving

from experiments.configs import synthetic
from unipinrec import checkpoint
from unipinrec.config import ServingConfig, from_mapping
from unipinrec.data.pipeline import training_iterator
from unipinrec.data.readers import read_interactions
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.export.checkpoint import config_hash
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig, IndexMismatchError
from unipinrec.serving import batch as batch_lib
from unipinrec.serving.recommender import Recommender, UserRequest
from unipinrec.train.experiment import CONFIG_FILE, setup_experiment
from unipinrec.types import TrainBatch

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM_ITEMS, NUM_OUTCOMES, MAX_LENGTH = 300, 2, 12
EXACT = IndexConfig(dtype="f32", exact=True)
CONFIG = ServingConfig(num_candidates=24, num_results=10, batch_size=4)


@pytest.fixture(scope="module", params=[False, True], ids=["cosine", "item_bias"])
def serving(request) -> ServingModel:
  return noisy_serving(NUM_ITEMS, NUM_OUTCOMES, MAX_LENGTH, request.param)


def _exact_index(serving: ServingModel, directory: str) -> store.ItemIndex:
  store.write(directory, serving.manifest(EXACT), serving.item_vectors())
  return store.load(directory, expected=serving.manifest(EXACT))


@pytest.fixture(scope="module")
def recommender(serving, tmp_path_factory) -> Recommender:
  return Recommender(serving, _exact_index(serving, str(tmp_path_factory.mktemp("index"))), CONFIG)


def _request(user, items, seed, **kwargs) -> UserRequest:
  rng = np.random.default_rng(seed)
  n = len(items)
  outcomes = rng.random((n, NUM_OUTCOMES)) < 0.5
  outcomes[:, 0] = True
  return UserRequest(
    user=user,
    items=np.asarray(items, np.int64),
    outcomes=outcomes,
    times=np.cumsum(rng.integers(10, 5000, n)).astype(np.float64),
    surfaces=rng.integers(0, 2, n),
    **kwargs,
  )


def _forward(serving: ServingModel, requests, slate_items: np.ndarray):
  """The blended training forward of the requests' histories with one slate of candidates."""
  model, params = serving.model, serving.params
  b = len(requests)
  items = np.zeros((b, MAX_LENGTH), np.int32)
  outcomes = np.zeros((b, MAX_LENGTH, NUM_OUTCOMES), bool)
  times = np.zeros((b, MAX_LENGTH), np.float32)
  surfaces = np.zeros((b, MAX_LENGTH), np.int32)
  lengths = np.array([len(r.items) for r in requests], np.int32)
  for row, r in enumerate(requests):
    n = len(r.items)
    origin = r.times[0] if n else 0.0
    items[row, :n], outcomes[row, :n], surfaces[row, :n] = r.items, r.outcomes, r.surfaces
    times[row, :n] = r.times - origin
  request_times = np.array(
    [(r.times[-1] - r.times[0]) if len(r.items) else 0.0 for r in requests], np.float32
  )
  batch = TrainBatch(
    items=items,
    outcomes=outcomes,
    times=times,
    surfaces=surfaces,
    history_lengths=lengths,
    slate_prefix=lengths[:, None],
    slate_times=request_times[:, None],
    slate_surfaces=np.zeros((b, 1), np.int32),
    slate_items=slate_items[:, None, :],
    slate_outcomes=np.zeros((b, 1, slate_items.shape[1], NUM_OUTCOMES), bool),
  )
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x, jnp.zeros(items.shape, bool)))
  outputs = forward(params, batch)
  # [B, O + 1, D] each history's queries at its last action (position 0 when empty).
  queries = np.asarray(outputs.queries)[np.arange(b), np.maximum(lengths - 1, 0)]
  return outputs, queries


def _reference(serving: ServingModel, requests, k: int, num_results: int):
  """Exact top-K by the training logit (cosine / temperature + item bias), then the
  blended training forward; retrieval scores are those logits times the temperature."""
  b = len(requests)
  first, all_queries = _forward(serving, requests, np.ones((b, k), np.int32))
  queries = all_queries[np.arange(b), [r.condition for r in requests]]
  # The encoder's raw vectors, scored as unit vectors.
  model, params = serving.model, serving.params
  table = np.asarray(
    model.apply({"params": params}, jnp.arange(NUM_ITEMS + 1), method=model.encode_items)
  )
  item_vectors = table / np.linalg.norm(table, axis=-1, keepdims=True)
  temperature = serving.model.config.temperature
  bias = np.zeros(NUM_ITEMS + 1) if first.item_bias is None else first.item_bias[: NUM_ITEMS + 1]
  retrieval_logits = queries @ item_vectors.T / temperature + np.asarray(bias)
  candidates = np.argsort(-retrieval_logits[:, 1:], axis=1)[:, :k] + 1
  logits = _forward(serving, requests, candidates)[0].candidate_task_logits[:, 0]
  probabilities = np.asarray(jax.nn.sigmoid(logits))
  gain = probabilities @ np.arange(1, NUM_OUTCOMES + 1)
  order = np.argsort(-gain, axis=1, kind="stable")[:, :num_results]
  top = np.take_along_axis(candidates, order, 1)
  scores = temperature * np.take_along_axis(retrieval_logits, top, 1)
  return top, np.take_along_axis(probabilities, order[..., None], 1), scores


def test_serving_encode_equals_encode_at_the_last_action(serving):
  model, params = serving.model, serving.params
  rng = np.random.default_rng(0)
  items = rng.integers(1, NUM_ITEMS + 1, (3, MAX_LENGTH)).astype(np.int32)
  outcomes = rng.random((3, MAX_LENGTH, NUM_OUTCOMES)) < 0.5
  times = np.cumsum(rng.integers(1, 900, (3, MAX_LENGTH)), axis=1).astype(np.float32)
  surfaces = rng.integers(0, 2, (3, MAX_LENGTH)).astype(np.int32)
  lengths = np.array([5, MAX_LENGTH, 0], np.int32)  # short, full and empty histories
  args = (items, outcomes, times, surfaces, lengths)

  @jax.jit
  def both(params, *args):
    return (
      model.apply({"params": params}, *args, method=model.encode),
      model.apply({"params": params}, *args, method=model.encode_last),
    )

  (states, cache), (last, serving_cache) = both(params, *args)
  np.testing.assert_allclose(last, states[np.arange(3), [4, MAX_LENGTH - 1, 0]], atol=1e-5)
  np.testing.assert_allclose(serving_cache.keys, cache.keys, atol=1e-6)
  np.testing.assert_allclose(serving_cache.values, cache.values, atol=1e-6)
  assert np.isfinite(last).all()


def test_recommendations_equal_exact_search_then_full_forward(serving, recommender):
  requests = [
    _request("a", [3, 17, 250, 9, 42], 0),
    _request("b", list(range(1, MAX_LENGTH + 1)), 1, condition=2),
    _request("c", [], 2),  # cold start
    _request("d", [299, 300, 1], 3, condition=1),
    _request("e", [120, 7], 4),  # a second batch, padded
  ]
  results = recommender.recommend(requests)
  top, probabilities, retrieval_scores = _reference(serving, requests, CONFIG.num_candidates, 10)
  assert [r.user for r in results] == ["a", "b", "c", "d", "e"]
  for row, result in enumerate(results):
    np.testing.assert_array_equal(result.items, top[row])
    np.testing.assert_allclose(result.outcome_probabilities, probabilities[row], atol=2e-5)
    np.testing.assert_allclose(result.retrieval_scores, retrieval_scores[row], atol=2e-5)
    np.testing.assert_allclose(result.scores, probabilities[row] @ [1, 2], atol=5e-5)
    assert np.all(np.diff(result.scores) <= 0)
  assert [r.cold_start for r in results] == [False, False, True, False, False]


def test_budgets_split_the_candidates_without_duplicates(serving, recommender):
  k = CONFIG.num_candidates
  everything = Recommender(
    serving, recommender.index, dataclasses.replace(CONFIG, num_results=k, merge_cosine=1.1)
  )
  request = _request("a", [3, 17, 250, 9, 42], 0, budgets={"save": 3, "click": 1})
  (result,) = everything.recommend([request])
  # By hand: exact top-K of each outcome's query; "save" (quota 18) and "click" (6) take
  # turns picking their best item not yet picked (3:1 of K = 24; merging off at cosine 1.1).
  _, queries = _forward(serving, [request], np.ones((1, k), np.int32))
  vectors = serving.item_vectors()
  if serving.model.config.item_bias:  # served queries end in a 1 that reads the item's bias
    queries = np.concatenate([queries, np.ones(queries.shape[:-1] + (1,))], axis=-1)
  ranked = {c: list(np.argsort(-(vectors[1:] @ queries[0, c]))[:k] + 1) for c in (1, 2)}
  picked = {1: [], 2: []}
  for turn in range(18):
    for condition, quota in ((2, 18), (1, 6)):
      if turn < quota:
        taken = picked[1] + picked[2]
        picked[condition].append(next(i for i in ranked[condition] if i not in taken))
  saves, clicks = picked[2], picked[1]
  assert len(set(result.items)) == k
  assert set(result.items[result.retrieved_for == 2]) == set(saves)
  assert set(result.items[result.retrieved_for == 1]) == set(clicks)
  np.testing.assert_allclose(
    result.retrieval_scores,
    np.sum(vectors[result.items] * queries[0, result.retrieved_for], -1),
    atol=2e-5,
  )
  plain = everything.recommend([dataclasses.replace(request, budgets=None)])[0]
  assert set(plain.retrieved_for) == {0}


def test_cold_start_users_get_one_finite_list(recommender):
  results = recommender.recommend(
    [_request("x", [], 0), _request("y", [], 1), _request("z", [0, NUM_ITEMS + 1], 2)]
  )
  for result in results:
    assert result.cold_start and len(result.items) == CONFIG.num_results
    assert np.isfinite(result.outcome_probabilities).all() and np.isfinite(result.scores).all()
    np.testing.assert_array_equal(result.items, results[0].items)
    np.testing.assert_allclose(result.outcome_probabilities, results[0].outcome_probabilities)
  assert results[2].unknown_items == (0, NUM_ITEMS + 1)


def test_unknown_ids_are_dropped_from_the_history(recommender):
  clean = _request("u", [5, 60, 7, 81], 0)
  # Unknown ids inserted before, between and after the known actions.
  items = np.insert(clean.items, [0, 2, 4], [NUM_ITEMS + 5, -3, 10**9])
  noisy = dataclasses.replace(
    clean,
    items=items,
    outcomes=np.insert(clean.outcomes, [0, 2, 4], True, axis=0),
    times=np.insert(clean.times, [0, 2, 4], [1.0, clean.times[1], clean.times[3] + 1]),
    surfaces=np.insert(clean.surfaces, [0, 2, 4], 1),
  )
  np.testing.assert_array_equal(np.delete(noisy.items, [0, 3, 6]), clean.items)
  expected, found = recommender.recommend([clean, noisy])
  np.testing.assert_array_equal(found.items, expected.items)
  np.testing.assert_allclose(found.outcome_probabilities, expected.outcome_probabilities, atol=1e-6)
  assert found.unknown_items == (NUM_ITEMS + 5, -3, 10**9) and expected.unknown_items == ()
  assert not found.cold_start


def test_an_index_of_another_model_is_refused(serving, recommender):
  later = dataclasses.replace(serving, step=serving.step + 1)
  with pytest.raises(IndexMismatchError, match="step: index has 5, model has 6"):
    Recommender(later, recommender.index, CONFIG)


def test_request_lines_parse_and_reject_bad_fields():
  names = ("click", "save")
  request = batch_lib.parse_request(
    {"user": 3, "items": [4, 5], "outcomes": ["save", ["click", "save"]], "condition": "save"},
    names,
  )
  np.testing.assert_array_equal(request.outcomes, [[False, True], [True, True]])
  np.testing.assert_array_equal(request.times, [0.0, 60.0])
  assert request.condition == 2 and request.request_time is None
  default = batch_lib.parse_request({"user": "u", "items": [4]}, names)
  np.testing.assert_array_equal(default.outcomes, [[True, False]])
  bad = [
    ({"user": 1, "items": [4], "outcomes": ["like"]}, "field 'outcomes': unknown outcome 'like'"),
    ({"user": 1, "items": [4, 5], "times": [0]}, "field 'times': 1 times for 2 items"),
    ({"user": 1, "items": [], "condition": "buy"}, "field 'condition': unknown condition 'buy'"),
    ({"user": 1, "items": [4, "5"]}, "field 'items': expected a list of integers, got [4, '5']"),
    ({"user": 1, "items": [4], "surfaces": [True]}, "field 'surfaces': expected a non-negative"),
    ({"user": 1, "items": [4], "budgets": {"save": 0}}, "field 'budgets': expected non-negative"),
    ({"user": [1], "items": [4]}, "field 'user': expected a string or an integer"),
    ({"user": 1, "items": [4], "times": [float("nan")]}, "field 'times': expected finite seconds"),
    ({"user": 1, "items": [4], "times": [-5]}, "field 'times': expected finite seconds >= 0"),
    ({"user": 1, "items": [4], "request_time": -1}, "field 'request_time': expected finite"),
    ({"items": [4]}, "field 'user': missing"),
    ({"user": 1, "items": [4], "request_tme": 5}, "field 'request_tme': unknown"),
  ]
  for record, message in bad:
    with pytest.raises(ValueError) as error:
      batch_lib.parse_request(record, names)
    assert str(error.value).startswith(message), (record, str(error.value))


def test_a_string_vocabulary_takes_and_gives_the_data_sets_ids(serving, recommender, tmp_path):
  """ASIN-like ids (in no particular order) in and out; unknown ones reported as sent."""
  rng = np.random.default_rng(0)
  vocabulary = ItemVocabulary([f"B{i:05d}X" for i in rng.permutation(NUM_ITEMS)])
  by_name = Recommender(
    serving, recommender.index, CONFIG, vocabulary=vocabulary, surface_names=("home", "search")
  )
  internal = _request("a", [3, 17, 250, 9, 42], 0)
  original = dataclasses.replace(
    internal,
    items=np.insert(vocabulary.to_original(internal.items), 2, "B99999X"),
    outcomes=np.insert(internal.outcomes, 2, True, axis=0),
    times=np.insert(internal.times, 2, internal.times[1]),
    surfaces=np.insert(internal.surfaces, 2, 0),
  )
  want, got = recommender.recommend([internal])[0], by_name.recommend([original])[0]
  assert got.items.tolist() == vocabulary.to_original(want.items).tolist()
  assert all(isinstance(i, str) for i in got.items.tolist())
  np.testing.assert_allclose(got.outcome_probabilities, want.outcome_probabilities, atol=1e-6)
  assert got.unknown_items == ("B99999X",) and want.unknown_items == ()

  # The same through JSON lines, surfaces by name; an integer id or an unknown surface name
  # is an error record naming the field.
  names = ("home", "search")
  line = {
    "user": "a",
    "items": vocabulary.to_original(internal.items).tolist() + ["B99999X"],
    "surfaces": [names[s] for s in internal.surfaces] + ["home"],
    "times": internal.times.tolist() + [internal.times[-1]],
    "surface": "search",
  }
  users = tmp_path / "users.jsonl"
  users.write_text(
    "\n".join(
      json.dumps(x)
      for x in [line, {**line, "items": [1, 2]}, {**line, "surface": "feed"}, line | {"user": 1}]
    )
  )
  out = tmp_path / "recs.jsonl"
  assert batch_lib.recommend_file(by_name, str(users), str(out)) == batch_lib.FileSummary(4, 2)
  first, wrong_type, unknown_surface, last = (json.loads(x) for x in out.read_text().splitlines())
  assert wrong_type == {
    "line": 2,
    "error": "line 2: field 'items': expected a list of strings, got [1, 2]",
  }
  assert unknown_surface["error"] == (
    "line 3: field 'surface': unknown surface 'feed'; expected one of ('home', 'search')"
  )
  assert first["unknown_items"] == ["B99999X"] and first["items"] == last["items"]
  numbered = {**line, "surfaces": internal.surfaces.tolist() + [0], "surface": 1}
  request = batch_lib.parse_request(line, serving.outcome_names, vocabulary, names)
  same = batch_lib.parse_request(numbered, serving.outcome_names, vocabulary, names)
  assert (request.request_surface, same.request_surface) == (1, 1)
  np.testing.assert_array_equal(request.surfaces, same.surfaces)
  [expected] = by_name.recommend([request])
  assert first["items"] == expected.items.tolist()
  with pytest.raises(ValueError, match="field 'items': expected a list of integers, got"):
    batch_lib.parse_request(line, serving.outcome_names, ItemVocabulary.identity(NUM_ITEMS))


def test_movielens_requests_are_answered_in_movie_ids(shared_data_dir, tmp_path):
  interactions = read_interactions(str(shared_data_dir / "ml-100k"))
  vocabulary = ItemVocabulary.from_items(interactions.items)
  serving = noisy_serving(len(vocabulary), NUM_OUTCOMES, MAX_LENGTH, item_bias=True)
  index = _exact_index(serving, str(tmp_path))
  by_movie_id = Recommender(serving, index, CONFIG, vocabulary=vocabulary)
  by_internal_id = Recommender(serving, index, CONFIG)
  user = interactions.users[0]
  movies = interactions.items[interactions.users == user][:MAX_LENGTH]
  movies_and_unknown = np.append(movies, 99999)
  request = _request("u", movies_and_unknown, 0)
  [got] = by_movie_id.recommend([request])
  [want] = by_internal_id.recommend(
    [dataclasses.replace(request, items=vocabulary.to_internal(movies_and_unknown))]
  )
  assert set(got.items.tolist()) <= set(interactions.items.tolist())
  np.testing.assert_array_equal(got.items, vocabulary.to_original(want.items))
  assert got.unknown_items == (99999,) and want.unknown_items == (0,)
  record = json.loads(json.dumps(batch_lib.format_recommendation(got, serving.outcome_names)))
  assert record["items"] == got.items.tolist() and record["unknown_items"] == [99999]


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
  """(work directory, run config) of a runlocal run whose step 0 is its initial state."""
  run = from_mapping(synthetic.get_config("runlocal").to_dict())
  run = dataclasses.replace(
    run, serving=ServingConfig(num_candidates=16, num_results=5, batch_size=4)
  )
  experiment = setup_experiment(run)
  workdir = str(tmp_path_factory.mktemp("run"))
  manager = checkpoint.make_manager(workdir, run.checkpoint)
  iterator = training_iterator(experiment.data.train_examples, run.batch_size, run.seed)
  checkpoint.save(manager, 0, experiment.initial_state, iterator, force=True)
  manager.wait_until_finished()
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    json.dump(dataclasses.asdict(run), f)
  return workdir, run


def test_recommend_file_serves_json_lines_from_a_checkpoint(checkpoint_run, tmp_path):
  """The CLI's library function on a runlocal checkpoint: builds the index (or reuses it)."""
  workdir, run = checkpoint_run
  users = tmp_path / "users.jsonl"
  users.write_text(
    json.dumps({"user": "a", "items": [1, 2, 3], "outcomes": ["click", "save", "click"]})
    + "\n\n"
    + json.dumps({"user": "b", "items": [99999]})
    + "\n"
  )
  out = tmp_path / "recs.jsonl"
  assert batch_lib.recommend_file(
    batch_lib.workdir_recommender(workdir), str(users), str(out)
  ) == batch_lib.FileSummary(2, 0)
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [line["user"] for line in lines] == ["a", "b"]
  assert lines[1]["cold_start"] and lines[1]["unknown_items"] == [99999]
  for line in lines:
    assert len(line["items"]) == 5 and len(set(line["items"])) == 5
    assert set(line["probabilities"]) == {"click", "save"}
    assert line["scores"] == sorted(line["scores"], reverse=True)
  manifest = store.load(os.path.join(workdir, batch_lib.INDEX_DIR)).manifest
  assert manifest.step == 0 and manifest.config_hash == config_hash(run)
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


# Good user lines (more than a batch of 4) with bad ones between them, and each bad line's error.
GOOD = [
  {"user": "a", "items": [1, 2, 3], "outcomes": ["click", "save", "click"]},
  {"user": "b", "items": [99999]},
  {"user": "c", "items": [5, 6], "condition": "save"},
  {"user": "d", "items": []},
  {"user": "e", "items": [7, 8, 9, 10], "budgets": {"save": 1, "click": 1}},
  {"user": "f", "items": [11, 12]},
]
BAD = {
  3: ('{"user": "j", "items": [1, 2', "invalid JSON: Expecting ',' delimiter at column 29"),
  4: (
    '{"user": "m", "outcomes": []}',
    "field 'items': missing; a user line needs 'user' and 'items'",
  ),
  7: (
    '{"user": "o", "items": [1, 2], "outcomes": ["click", "like"]}',
    "field 'outcomes': unknown outcome 'like'; expected ('click', 'save')",
  ),
  8: ('{"user": "s", "items": "12"}', "field 'items': expected a list of integers, got '12'"),
  10: ("[1, 2]", "expected a JSON object, got [1, 2]"),
  11: ('{"user": "t", "items": [1], "times": [0, 60]}', "field 'times': 2 times for 1 items"),
}
MIXED = {1: GOOD[0], 2: GOOD[1], 6: GOOD[2], 9: GOOD[3], 12: GOOD[4], 13: GOOD[5]}  # 5 is blank


@pytest.mark.slow
def test_recommend_answers_every_good_line_and_writes_an_error_record_per_bad_one(
  checkpoint_run, tmp_path
):
  workdir, _ = checkpoint_run
  good, mixed = tmp_path / "good.jsonl", tmp_path / "mixed.jsonl"
  good.write_text("".join(json.dumps(user) + "\n" for user in GOOD))
  lines = {number: json.dumps(user) for number, user in MIXED.items()}
  lines.update({number: text for number, (text, _) in BAD.items()})
  mixed.write_text("".join(lines.get(number, "") + "\n" for number in range(1, 14)))
  expected = tmp_path / "good-recs.jsonl"
  assert batch_lib.recommend_file(
    batch_lib.workdir_recommender(workdir), str(good), str(expected)
  ) == batch_lib.FileSummary(6, 0)

  out = tmp_path / "recs.jsonl"
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.recommend",
      f"--workdir={workdir}",
      f"--users={mixed}",
      f"--out={out}",
    ],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert done.returncode == 1, done.stderr[-3000:]
  assert f"6 of 12 lines failed; see error records in {out}" in done.stderr.splitlines()
  assert "Traceback" not in done.stderr
  records = [json.loads(line) for line in out.read_text().splitlines()]
  numbers = [n for n in range(1, 14) if n != 5]
  answered = {n: r for n, r in zip(numbers, records, strict=True) if n in MIXED}
  assert list(answered.values()) == [json.loads(line) for line in expected.read_text().splitlines()]
  errors = {n: r for n, r in zip(numbers, records, strict=True) if n in BAD}
  assert errors == {
    n: {"line": n, "error": f"line {n}: {message}"} for n, (_, message) in BAD.items()
  }
