"""The online server over a real socket on 127.0.0.1: endpoints, the user's ids, micro-batches
equal to single calls, bad input as 4xx naming the field, overload as 503, a hot swap; and
bench_server end to end."""

import asyncio
import contextlib
import json
import math
import os
import pathlib
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from hang_guard import HANG_SECONDS
from serving_models import SURFACES, export_noisy_bundle

from unipinrec.bench import server_load
from unipinrec.serving import batch, server
from unipinrec.serving.bundle import Bundle

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("bundle")
  export_noisy_bundle(directory, seed=0)
  return directory


@pytest.fixture(scope="module")
def users(bundle_dir) -> list[dict]:
  lines = server.sample_user_lines(Bundle.load(str(bundle_dir)), 12, seed=1)
  for n, line in enumerate(lines):
    if n % 3 == 1:
      line["budgets"] = {"click": 1, "save": 2}
    elif n % 3 == 2:
      line.update(condition="save", surface="search")
  return lines


def _expected(bundle: Bundle, lines: list[dict]) -> list[dict]:
  """Each user's answer from the in-process Recommender, one user per call."""
  answers = []
  for line in lines:
    request = batch.parse_request(line, bundle.outcome_names, bundle.vocabulary, SURFACES)
    (recommendation,) = bundle.recommender.recommend([request])
    answers.append(
      json.loads(json.dumps(batch.format_recommendation(recommendation, bundle.outcome_names)))
    )
  return answers


def _assert_same(got: dict, want: dict) -> None:
  assert got["items"] == want["items"] and got["retrieved_for"] == want["retrieved_for"]
  for field in ("scores", "retrieval_scores"):
    np.testing.assert_allclose(got[field], want[field], atol=1e-5)
  for name, probabilities in want["probabilities"].items():
    np.testing.assert_allclose(got["probabilities"][name], probabilities, atol=1e-5)


@contextlib.contextmanager
def _serving(bundle_dir, config: server.ServerConfig, bundle: Bundle | None = None):
  """(url, slot) of a server in a thread of this process, on a free port of 127.0.0.1."""
  bundle = bundle or server.warm(Bundle.load(str(bundle_dir)))
  slot = server.BundleSlot(str(bundle_dir), bundle)
  sock = server.listen("127.0.0.1", 0)
  http = server.http_server(server.create_app(slot, config))
  thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + HANG_SECONDS
  while not http.started and time.monotonic() < deadline:
    time.sleep(0.01)
  assert http.started
  try:
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", slot
  finally:
    http.should_exit = True
    thread.join(HANG_SECONDS)


async def _post_all(
  url: str, bodies: list, path: str = server_load.RECOMMEND
) -> list[httpx.Response]:
  """Every body posted at once, each on its own connection."""
  limits = httpx.Limits(max_connections=len(bodies))
  async with httpx.AsyncClient(base_url=url, limits=limits, timeout=HANG_SECONDS) as client:
    return await asyncio.gather(
      *(client.post(path, content=b if isinstance(b, bytes) else json.dumps(b)) for b in bodies)
    )


@pytest.fixture(scope="module")
def live(bundle_dir):
  """A server batching up to 4 users, waiting long enough for concurrent requests to meet."""
  with _serving(bundle_dir, server.ServerConfig(max_batch=4, max_wait_ms=50.0)) as running:
    yield running


def test_endpoints_speak_the_bundles_ids_and_name_its_version(live, users):
  url, slot = live
  bundle = slot.current
  health = httpx.get(f"{url}/healthz").json()
  assert health == {"status": "ok", "bundle_version": bundle.version}
  meta = httpx.get(f"{url}/v1/metadata").json()
  assert meta["bundle_version"] == bundle.version and meta["step"] == bundle.manifest.step
  assert meta["num_items"] == 120 and meta["item_ids"] == "string"
  assert meta["outcomes"] == ["click", "save"] and meta["surfaces"] == list(SURFACES)
  assert meta["batch_sizes"] == [1, 2, 4]
  response = httpx.post(f"{url}/v1/recommend", json=users[0])
  assert response.status_code == 200
  assert response.headers[server.VERSION_HEADER] == bundle.version
  answer = response.json()
  assert answer["bundle_version"] == bundle.version
  (got,) = answer["recommendations"]
  assert bundle.vocabulary.to_internal(np.asarray(got["items"])).all()  # the data's own ids
  _assert_same(got, _expected(bundle, users[:1])[0])
  many = httpx.post(f"{url}/v1/recommend", json={"users": users[:3]}).json()["recommendations"]
  for got, want in zip(many, _expected(bundle, users[:3]), strict=True):
    _assert_same(got, want)


def test_micro_batched_answers_equal_one_user_calls(live, users):
  url, slot = live
  before = httpx.get(f"{url}/v1/metadata").json()
  responses = asyncio.run(_post_all(url, users))
  after = httpx.get(f"{url}/v1/metadata").json()
  batches = after["served_micro_batches"] - before["served_micro_batches"]
  assert after["served_users"] - before["served_users"] == len(users)
  assert batches < len(users)  # some requests met in a micro-batch
  for response, want in zip(responses, _expected(slot.current, users), strict=True):
    assert response.status_code == 200
    _assert_same(response.json()["recommendations"][0], want)


def test_bad_input_is_a_4xx_naming_the_field_and_odd_input_is_answered_as_documented(live, users):
  url, _ = live
  cases = server_load.malformed_cases(users[0], integer_ids=False)
  responses = asyncio.run(_post_all(url, [body for _, _, body in cases]))
  for (name, needle, _), response in zip(cases, responses, strict=True):
    assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    assert needle in response.json()["error"], (name, response.json())
  documented = server_load.documented_cases(users[1], integer_ids=False)
  responses = asyncio.run(_post_all(url, [body for _, _, body in documented]))
  for (name, shows, _), response in zip(documented, responses, strict=True):
    assert response.status_code == 200 and shows(response.json()["recommendations"][0]), name
  assert httpx.get(f"{url}/v1/recommend").status_code == 405
  assert httpx.post(f"{url}/admin/reload", content=b"[").status_code == 400


def test_no_body_gets_a_5xx(live, users):
  """Each field of a valid user set to a value of every JSON kind, and odd bodies: every answer
  is a 200 or a 4xx naming the field (or the body)."""
  url, _ = live
  values = [None, True, -1, 1.5, 10**30, math.nan, "x", "\ud800", [], [None], [[1]], {}, {"a": 1}]
  bodies = [
    json.dumps({**users[0], field: value}).encode()
    for field in (*batch.REQUEST_FIELDS, "extra")
    for value in values
  ]
  bodies += [
    b"[" * 100_000 + b"]" * 100_000,  # nested too deeply for the parser
    b'{"user": 1, "items": [' + b"9" * 5000 + b"]}",  # an integer too long to convert
    b"",
    b"\xff\xfe",
    b"null",
    b"1e999",
  ]
  responses = asyncio.run(_post_all(url, bodies))
  failed = [
    (b[:60], r.status_code) for b, r in zip(bodies, responses, strict=True) if r.status_code >= 500
  ]
  assert not failed
  for response in responses:
    if response.status_code != 200:
      assert response.status_code in (400, 413)
      assert response.json()["error"].startswith(("field ", "body: ")), response.json()
  surrogate = httpx.post(f"{url}/v1/recommend", content=json.dumps({**users[0], "user": "\ud800"}))
  assert surrogate.json()["recommendations"][0]["user"] == "\ud800"  # echoed as sent


def test_a_full_queue_answers_503_at_once_and_the_queued_requests_are_served(bundle_dir, users):
  bundle = server.warm(Bundle.load(str(bundle_dir)))
  recommend, entered, release = bundle.recommender.recommend, threading.Event(), threading.Event()

  def held(requests):
    entered.set()
    release.wait(HANG_SECONDS)
    return recommend(requests)

  bundle.recommender.recommend = held
  config = server.ServerConfig(max_batch=1, max_wait_ms=0.0, max_queue=2)
  with _serving(bundle_dir, config, bundle) as (url, _):

    async def run():
      async with httpx.AsyncClient(base_url=url, timeout=HANG_SECONDS) as client:
        first = asyncio.create_task(client.post(server_load.RECOMMEND, json=users[0]))
        assert await asyncio.to_thread(entered.wait, HANG_SECONDS)  # the worker holds it
        queued = [
          asyncio.create_task(client.post(server_load.RECOMMEND, json=u)) for u in users[1:3]
        ]
        await asyncio.sleep(0.2)  # both are in the queue
        refused = await asyncio.gather(
          *(client.post(server_load.RECOMMEND, json=u) for u in users[3:6])
        )
        release.set()
        return refused, await asyncio.gather(first, *queued)

    refused, served = asyncio.run(run())
  assert [r.status_code for r in refused] == [503] * 3
  assert all("overloaded" in r.json()["error"] and r.headers["Retry-After"] for r in refused)
  assert [r.status_code for r in served] == [200] * 3


@pytest.mark.slow
def test_a_hot_swap_mid_stream_drops_nothing_and_never_mixes_bundles(bundle_dir, tmp_path, users):
  directory = tmp_path / "bundle"
  server_load.copy_version(str(bundle_dir), str(directory))
  config = server.ServerConfig(max_batch=4, max_wait_ms=5.0)
  with _serving(directory, config) as (url, slot):
    old = slot.current
    swap = {}

    async def stream():
      async def reload():
        await asyncio.sleep(0.5)
        new_path = await asyncio.to_thread(export_noisy_bundle, directory, 7)  # another model
        async with httpx.AsyncClient(base_url=url, timeout=HANG_SECONDS) as client:
          response = await client.post("/admin/reload")
        swap.update(path=new_path, answered=time.perf_counter(), answer=response.json())

      answers, _ = await asyncio.gather(
        server_load.drive(
          url,
          server_load.cycle_users(users),
          4,
          HANG_SECONDS,
          until=lambda: time.perf_counter() > swap.get("answered", np.inf) + 1.0,
        ),
        reload(),
      )
      return answers

    answers = asyncio.run(stream())
    new = slot.current
  assert swap["answer"] == {
    "bundle_version": os.path.basename(swap["path"]),
    "previous_version": old.version,
    "step": new.manifest.step,
  }
  assert all(a.status == 200 for a in answers)  # none dropped, none failed
  versions = [a.version for a in sorted(answers, key=lambda a: a.sent)]
  assert set(versions) == {old.version, new.version}
  assert all(a.version == new.version for a in answers if a.sent > swap["answered"])
  expected = {
    old.version: dict(zip(map(json.dumps, users), _expected(old, users), strict=True)),
    new.version: dict(zip(map(json.dumps, users), _expected(new, users), strict=True)),
  }
  assert expected[old.version] != expected[new.version]
  for answer in answers:  # each answer is wholly its version's
    got = json.loads(answer.body)["recommendations"][0]
    user = next(u for u in users if u["user"] == got["user"])
    _assert_same(got, expected[answer.version][json.dumps(user)])


def test_the_launcher_refuses_bad_flags_in_one_line(bundle_dir):
  done = subprocess.run(
    [sys.executable, "-m", "experiments.serve", f"--bundle={bundle_dir}", "--max_batch=0"],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
  )
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == ["error: flag --max_batch must be at least 1, got 0"]


@pytest.mark.slow
def test_bench_server_measures_both_modes_a_swap_and_bad_input(bundle_dir, tmp_path):
  bundle = bundle_dir
  out = tmp_path / "bench"
  done = subprocess.run(
    [sys.executable, "-m", "experiments.bench_server", f"--bundle={bundle}", f"--out={out}"]
    + ["--seconds=0.3", "--concurrency=1,3", "--swap_clients=3", "--malformed=40"],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  document = json.loads((out / "bench_server.json").read_text())
  assert [(r["batching"], r["concurrency"]) for r in document["runs"]] == [
    (True, 1),
    (True, 3),
    (False, 1),
    (False, 3),
  ]
  for run in document["runs"]:
    assert run["requests"] > 0 and run["errors"] == 0
    assert 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"]
    assert run["requests_per_second"] == run["requests"] / 0.3
  assert set(document["ceiling"]["users_per_second"]) == {"1", "2", "4"}
  swap = document["hot_swap"]
  assert swap["dropped"] == swap["errors"] == swap["old_after_swap"] == 0
  assert len(swap["versions_seen"]) == 2 and swap["reload_status"] == 200
  bad = document["malformed"]
  assert bad["sent"] == bad["answered_4xx"] == bad["naming_the_field"] == 40
  assert bad["answered_5xx"] == bad["valid_beside_failed"] == 0 and bad["valid_sent"] > 0
  assert bad["documented_sent"] == bad["documented_as_documented"] > 0
  checks = document["checks"]
  assert checks["hot_swap_drops_none"] and checks["malformed_all_4xx_naming_the_field"]
  assert not checks["batching_3x_requests_per_second_at_32"]  # 32 clients were not run
  assert "| on | 3 |" in done.stdout and "PASS hot_swap_drops_none" in done.stdout
