"""Load on a running server (`experiments.serve`): concurrent clients over HTTP for a bounded
time; throughput, latency and errors, a hot swap under load, and malformed requests.

The users are `server.sample_user_lines`: random histories of the bundle's own item ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import httpx
import numpy as np

from unipinrec import versions
from unipinrec.export import bundle_format as fmt
from unipinrec.serving.bundle import Bundle
from unipinrec.serving.server import VERSION_HEADER, users_per_second

RECOMMEND = "/v1/recommend"
START_SECONDS = 300  # a server that has not listened by then has failed


@dataclasses.dataclass(frozen=True)
class Answer:
  """One request as a client saw it."""

  sent: float  # perf_counter when sent
  seconds: float  # until the whole answer arrived
  status: int | None  # None: no HTTP answer (connection refused, reset or timed out)
  version: str | None  # the bundle that served it (every answer names one)
  body: bytes
  kind: str = "valid"  # or the malformed case's name


class ServerProcess:
  """`python -m experiments.serve` on 127.0.0.1 and a free port, for a `with` block.

  The server prints `listening on URL` once its bundle is loaded and compiled; leaving the
  block sends SIGTERM (the server finishes what is in flight) and waits for it.
  """

  def __init__(self, bundle: str, flags: Sequence[str] = ()):
    self.command = [
      sys.executable,
      "-m",
      "experiments.serve",
      f"--bundle={bundle}",
      "--host=127.0.0.1",
      "--port=0",
      *flags,
    ]
    self.url = ""
    self.returncode: int | None = None  # once the block is left
    self._process: subprocess.Popen | None = None

  def __enter__(self) -> ServerProcess:
    self._process = subprocess.Popen(
      self.command, stdout=subprocess.PIPE, text=True, cwd=_repository_root()
    )
    found = threading.Event()

    def read() -> None:
      for line in self._process.stdout:
        if line.startswith("listening on "):
          self.url = line.split()[-1]
          found.set()
      found.set()  # the server ended

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(START_SECONDS) or not self.url:
      self.__exit__()
      raise RuntimeError(f"the server did not start: {' '.join(self.command)}")
    return self

  def __exit__(self, *exc) -> None:
    self._process.terminate()
    try:
      self.returncode = self._process.wait(60)
    except subprocess.TimeoutExpired:
      self._process.kill()
      self.returncode = self._process.wait()


def _repository_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def _post(client: httpx.AsyncClient, path: str, body: bytes, kind: str) -> Answer:
  sent = time.perf_counter()
  try:
    response = await client.post(path, content=body)
  except httpx.TransportError:
    return Answer(sent, time.perf_counter() - sent, None, None, b"", kind)
  return Answer(
    sent,
    time.perf_counter() - sent,
    response.status_code,
    response.headers.get(VERSION_HEADER),
    response.content,
    kind,
  )


def _client(url: str) -> httpx.AsyncClient:
  """One client's keep-alive connection (a pool of many is slow to pick from in httpx)."""
  limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
  return httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0)


async def drive(
  url: str,
  next_body: Callable[[], tuple[bytes, str]],
  concurrency: int,
  seconds: float,
  until: Callable[[], bool] = lambda: False,
) -> list[Answer]:
  """`concurrency` clients, each on its own connection, posting `next_body()`'s (body, kind)
  to /v1/recommend and the next once answered, until `seconds` have passed or `until()`."""
  answers: list[Answer] = []
  end = time.perf_counter() + seconds

  async def one_client() -> None:
    async with _client(url) as client:
      while time.perf_counter() < end and not until():
        body, kind = next_body()
        answers.append(await _post(client, RECOMMEND, body, kind))

  await asyncio.gather(*(one_client() for _ in range(concurrency)))
  return answers


def summary(answers: Sequence[Answer], seconds: float) -> dict:
  """Requests/s over `seconds`, latency percentiles (ms) and errors (any answer but a 200)."""
  latencies = np.asarray([a.seconds for a in answers]) * 1000.0
  percentile = (
    (lambda q: float(np.percentile(latencies, q))) if len(answers) else (lambda q: math.nan)
  )
  return {
    "requests": len(answers),
    "requests_per_second": len(answers) / seconds,
    "p50_ms": percentile(50),
    "p90_ms": percentile(90),
    "p99_ms": percentile(99),
    "errors": sum(a.status != 200 for a in answers),
  }


def cycle_users(users: Sequence[dict]) -> Callable[[], tuple[bytes, str]]:
  """A `drive` body source: the users' request bodies in turn, each of kind "valid"."""
  bodies = itertools.cycle([json.dumps(user).encode() for user in users])
  return lambda: (next(bodies), "valid")


def load_runs(
  url: str, users: Sequence[dict], concurrency: Sequence[int], seconds: float
) -> Iterator[dict]:
  """One `summary` per concurrency, each after untimed load (a second, or `seconds` if less)."""
  for clients in concurrency:
    asyncio.run(drive(url, cycle_users(users), clients, min(1.0, seconds)))
    answers = asyncio.run(drive(url, cycle_users(users), clients, seconds))
    yield {"concurrency": clients, **summary(answers, seconds)}


def model_ceiling(bundle: Bundle, seconds: float) -> dict:
  """Users/s of the bundle's `Recommender` alone (no HTTP) at each of its batch sizes: what
  micro-batching can gain at most is the best over the smallest batch's."""
  rates = {str(size): rate for size, rate in users_per_second(bundle, seconds).items()}
  smallest = rates[str(min(bundle.recommender.batch_sizes))]
  return {"users_per_second": rates, "best_over_smallest_batch": max(rates.values()) / smallest}


def copy_version(bundle: str, directory: str) -> str:
  """Publishes a copy of `bundle`'s current version as a new version of `directory`."""
  source = fmt.version_path(bundle)
  return versions.publish(
    directory, lambda folder: shutil.copytree(source, folder, dirs_exist_ok=True)
  )


def hot_swap(
  url: str, served: str, bundle: str, users: Sequence[dict], clients: int, seconds: float
) -> dict:
  """Load of `clients` from the start until `seconds` after the swap: after `seconds`, a new
  version of the served directory `served` (a copy of `bundle`) is published and
  /admin/reload swaps to it (loading and compiling it under the load)."""

  async def run() -> tuple[list[Answer], dict]:
    swap: dict = {}

    async def reload() -> None:
      await asyncio.sleep(seconds)
      await asyncio.to_thread(copy_version, bundle, served)
      async with _client(url) as client:
        response = await client.post("/admin/reload", timeout=START_SECONDS)
      swap.update(status=response.status_code, answered=time.perf_counter(), **response.json())

    def swapped_long_ago() -> bool:
      return time.perf_counter() > swap.get("answered", math.inf) + seconds

    load = drive(url, cycle_users(users), clients, 2 * seconds + START_SECONDS, swapped_long_ago)
    answers, _ = await asyncio.gather(load, reload())
    return answers, swap

  answers, swap = asyncio.run(run())
  seen = list(dict.fromkeys(a.version for a in sorted(answers, key=lambda a: a.sent) if a.version))
  new = swap.get("bundle_version")
  return {
    "requests": len(answers),
    "dropped": sum(a.status is None for a in answers),
    "errors": sum(a.status is not None and a.status != 200 for a in answers),
    "versions_seen": seen,
    "reload_status": swap.get("status"),
    # Sent after the reload answered, yet served by the old bundle: must be none.
    "old_after_swap": sum(
      a.sent > swap.get("answered", math.inf) and a.version != new for a in answers
    ),
  }


def malformed_cases(user: dict, integer_ids: bool) -> list[tuple[str, str, bytes]]:
  """(case, what its 4xx message must contain, body) of each kind of bad request, made from
  the valid `user`: wrong types, missing and unknown fields, a 10,000-long history, ids of the
  other kind, unknown outcome names, NaN and negative times, invalid JSON."""
  items, outcomes = user["items"], user["outcomes"]

  def body(**changes: object) -> bytes:
    return json.dumps({**user, **changes}).encode()  # NaN goes out as JSON's NaN token

  def missing(field: str) -> bytes:
    return json.dumps({k: v for k, v in user.items() if k != field}).encode()

  long_history = {"user": user["user"], "items": (items * (10_000 // len(items) + 1))[:10_000]}
  other_kind = "B00-not-an-id" if integer_ids else 12345
  return [
    ("items_not_a_list", "field 'items'", body(items="12")),
    ("user_a_list", "field 'user'", body(user=[1])),
    ("outcomes_a_number", "field 'outcomes'", body(outcomes=3)),
    ("surface_negative", "field 'surface'", body(surface=-1)),
    ("budgets_a_list", "field 'budgets'", body(budgets=[1])),
    ("missing_items", "field 'items'", missing("items")),
    ("missing_user", "field 'user'", missing("user")),
    ("history_of_10000", "field 'items'", json.dumps(long_history).encode()),
    ("id_of_the_other_kind", "field 'items'", body(items=[*items[:-1], other_kind])),
    ("unknown_outcome", "field 'outcomes'", body(outcomes=[*outcomes[:-1], "no-such-outcome"])),
    ("unknown_condition", "field 'condition'", body(condition="no-such-outcome")),
    ("nan_time", "field 'times'", body(times=[*user["times"][:-1], math.nan])),
    ("negative_times", "field 'times'", body(times=[-1.0] * len(items))),
    ("nan_request_time", "field 'request_time'", body(request_time=math.nan)),
    ("unknown_field", "field 'itemz'", body(itemz=[1])),
    ("invalid_json", "body:", body()[:-7]),
    ("not_utf8", "body:", b'{"user": "\xff", "items": []}'),
    ("not_an_object", "body:", b"[1, 2]"),
    ("no_users", "field 'users'", b'{"users": []}'),
    (
      "second_user_bad",
      "users[1]: field 'times'",
      json.dumps({"users": [user, {**user, "times": "x"}]}).encode(),
    ),
  ]


def documented_cases(
  user: dict, integer_ids: bool
) -> list[tuple[str, Callable[[dict], bool], bytes]]:
  """(case, what its 200 answer must show, body) of the requests that look odd but have a
  documented answer: an empty history (cold start) and an unknown item id (dropped, listed)."""
  unknown = 10**12 if integer_ids else "no-such-item"
  with_unknown = {
    **user,
    "items": [*user["items"], unknown],
    "outcomes": [*user["outcomes"], user["outcomes"][-1]],
    "times": [*user["times"], user["times"][-1] + 1],
  }
  return [
    (
      "empty_history",
      lambda answer: answer["cold_start"],
      json.dumps({"user": "new", "items": []}).encode(),
    ),
    (
      "unknown_item",
      lambda answer: unknown in answer["unknown_items"],
      json.dumps(with_unknown).encode(),
    ),
  ]


def _error(answer: Answer) -> str:
  try:
    return str(json.loads(answer.body).get("error", ""))
  except (json.JSONDecodeError, AttributeError):
    return ""


def malformed_load(
  url: str, users: Sequence[dict], integer_ids: bool, count: int, clients: int, max_seconds: float
) -> dict:
  """`count` malformed requests mixed 1:1 with valid ones (and every tenth a documented
  case) from `clients` clients; stops once all are sent, or after `max_seconds`."""
  cases = malformed_cases(users[0], integer_ids)
  documented = documented_cases(users[1], integer_ids)
  valid = cycle_users(users)
  sent = {"malformed": 0, "all": 0}

  def next_body() -> tuple[bytes, str]:
    turn = sent["all"]
    sent["all"] += 1
    if turn % 2 == 0 and sent["malformed"] < count:
      name, _, body = cases[sent["malformed"] % len(cases)]
      sent["malformed"] += 1
      return body, name
    if turn % 10 == 1:
      name, _, body = documented[(turn // 10) % len(documented)]
      return body, name
    return valid()

  answers = asyncio.run(
    drive(url, next_body, clients, max_seconds, lambda: sent["malformed"] >= count)
  )
  expected = {name: needle for name, needle, _ in cases}
  shows = {name: check for name, check, _ in documented}
  bad = [a for a in answers if a.kind in expected]
  odd = [a for a in answers if a.kind in shows]
  good = [a for a in answers if a.kind == "valid"]

  def shown(answer: Answer) -> bool:
    return answer.status == 200 and shows[answer.kind](
      json.loads(answer.body)["recommendations"][0]
    )

  return {
    "sent": len(bad),
    "answered_4xx": sum(a.status is not None and 400 <= a.status < 500 for a in bad),
    "answered_5xx": sum(a.status is not None and a.status >= 500 for a in bad),
    "naming_the_field": sum(expected[a.kind] in _error(a) for a in bad),
    "valid_sent": len(good),
    "valid_beside_failed": sum(a.status != 200 for a in good),  # must be none
    "documented_sent": len(odd),
    "documented_as_documented": sum(shown(a) for a in odd),
    "first_failures": [  # of the malformed and documented cases: what went wrong
      {"case": a.kind, "status": a.status, "body": a.body[:300].decode(errors="replace")}
      for a in bad + odd
      if (a.kind in shows and not shown(a))
      or (a.kind in expected and not (a.status and 400 <= a.status < 500))
    ][:5],
  }
