"""The online server: a bundle's `Recommender` behind HTTP, micro-batched, hot-swappable.

  POST /v1/recommend   one user (the JSON object of a `serving/batch.py` user line) or
                       {"users": [...]}; answers {"bundle_version", "step",
                       "recommendations": [one output line per user, in order]}
  GET  /healthz        {"status": "ok", "bundle_version"} once a bundle is loaded and warm
  GET  /v1/metadata    the served bundle: version, step, catalogue size, outcomes, surfaces
  POST /admin/reload   loads the bundle directory's current version (or {"bundle": DIR}),
                       warms it, then swaps it in; answers the old and new versions

Every answer names the bundle version that served it (`bundle_version`, and the
`X-Bundle-Version` header). Concurrent requests are micro-batched: one worker thread takes
the queued requests of one bundle, up to `max_batch` users, waiting at most `max_wait_ms`
after the first, and runs them as one `Recommender.recommend` call. The queue holds at most
`max_queue` requests; beyond, a request is answered 503 at once. A swap never mixes bundles:
a request is parsed and served by the bundle current when it arrived, so requests in flight
finish on the old one while new ones go to the new one, which is loaded and compiled for
every batch size before it is swapped in. Bad input is a 4xx whose message names the field
(`users[2]: field 'times': ...`); a 500 is a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import reprlib
import socket
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import uvicorn
from absl import logging
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from unipinrec.errors import MissingPathError
from unipinrec.export.bundle_format import BundleError
from unipinrec.serving import batch
from unipinrec.serving.bundle import Bundle
from unipinrec.serving.micro_batch import MicroBatcher, Overloaded
from unipinrec.serving.recommender import UserRequest

VERSION_HEADER = "X-Bundle-Version"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """How requests are batched and bounded."""

  max_batch: int = 32  # users per micro-batch (1: every request alone)
  # How long a micro-batch waits for more after its first request. 0: it takes what queued
  # while the previous batch ran, which adds no latency when the server is idle.
  max_wait_ms: float = 0.0
  max_queue: int = 256  # requests waiting for the model; more are answered 503
  max_users: int = 256  # users in one request
  max_history: int = 1000  # actions in one user's history; the model reads its last L
  max_body_bytes: int = 16 << 20

  def __post_init__(self):
    """Raises ValueError naming the first setting out of range."""
    for name in ("max_batch", "max_queue", "max_users", "max_history", "max_body_bytes"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
    if not math.isfinite(self.max_wait_ms) or self.max_wait_ms < 0:
      raise ValueError(f"max_wait_ms must be a number >= 0, got {self.max_wait_ms}")


class BadRequest(ValueError):
  """A request the server refuses: its status and a message naming the field."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def warm(bundle: Bundle) -> Bundle:
  """`bundle`, each of its computations compiled by one call (a cold-start user per row)."""
  recommender = bundle.recommender
  user = batch.parse_request(
    {"user": "warm-up", "items": []},
    bundle.outcome_names,
    bundle.vocabulary,
    bundle.surface_names,
  )
  for size in recommender.batch_sizes:
    recommender.recommend([user] * size)
  return bundle


def sample_user_lines(bundle: Bundle, count: int, seed: int = 0) -> list[dict]:
  """`count` user lines of random histories of the bundle's items, the model's window long:
  each costs the model what a real user does (the computations' shapes are fixed)."""
  rng = np.random.default_rng(seed)
  length = bundle.recommender.serving.model.config.max_length
  names = bundle.outcome_names
  lines = []
  for user in range(count):
    items = bundle.vocabulary.to_original(rng.integers(1, len(bundle.vocabulary) + 1, length))
    lines.append(
      {
        "user": f"sample-{user}",
        "items": items.tolist(),
        "outcomes": [names[o] for o in rng.integers(0, len(names), length)],
        "times": (1.7e9 + np.cumsum(rng.integers(1, 3600, length))).tolist(),
      }
    )
  return lines


def users_per_second(bundle: Bundle, seconds: float) -> dict[int, float]:
  """Users/s of the (warm) bundle's `Recommender` alone at each of its batch sizes, on
  `sample_user_lines`, each size timed for about `seconds`."""
  recommender = bundle.recommender
  requests = [
    batch.parse_request(line, bundle.outcome_names, bundle.vocabulary, bundle.surface_names)
    for line in sample_user_lines(bundle, max(recommender.batch_sizes))
  ]
  rates = {}
  for size in recommender.batch_sizes:
    calls, start = 0, time.perf_counter()
    while not calls or time.perf_counter() - start < seconds:
      recommender.recommend(requests[:size])
      calls += 1
    rates[size] = calls * size / (time.perf_counter() - start)
  return rates


class BundleSlot:
  """The bundle being served, swapped whole by `reload`."""

  def __init__(self, directory: str, bundle: Bundle):
    self.directory = directory  # what a plain reload reads
    self.current = bundle
    self._reloading = threading.Lock()

  def reload(self, directory: str | None = None) -> tuple[Bundle, Bundle]:
    """Loads and warms `directory`'s current version (default: the served directory's), then
    serves it; returns (old, new). One reload at a time; requests go on meanwhile.

    Raises:
      MissingPathError, BundleError: nothing is swapped.
    """
    with self._reloading:
      directory = directory or self.directory
      new = warm(Bundle.load(directory))
      old, self.current, self.directory = self.current, new, directory
      logging.info("serving bundle %s (was %s)", new.version, old.version)
      return old, new


def decode_json(raw: bytes) -> object:
  """The JSON value of a request body.

  Raises:
    BadRequest: not JSON, not UTF-8, nested too deeply, or an integer of over 4,300 digits.
  """
  try:
    return json.loads(raw)
  except json.JSONDecodeError as error:
    raise BadRequest(f"body: invalid JSON: {error.msg} at column {error.colno}") from None
  except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError too
    raise BadRequest(f"body: invalid JSON: {reprlib.repr(str(error))}") from None


def _user_records(body: object, limits: ServerConfig) -> tuple[list, str]:
  """The user objects of a request body and how a field of user i is named in errors."""
  if isinstance(body, dict) and "users" in body:
    if set(body) != {"users"}:
      extra = sorted(set(body) - {"users"})[0]
      raise BadRequest(f"field {extra!r}: unknown beside 'users'")
    users = body["users"]
    if not isinstance(users, list) or not users:
      raise BadRequest(f"field 'users': expected a non-empty list, got {reprlib.repr(users)}")
    if len(users) > limits.max_users:
      raise BadRequest(
        f"field 'users': {len(users)} users, over this server's limit of {limits.max_users}",
        413,
      )
    return users, "users[{}]: "
  if isinstance(body, dict):
    return [body], ""
  raise BadRequest(
    f"body: expected a JSON object (a user, or {{'users': [...]}}), got {reprlib.repr(body)}"
  )


def parse_body(raw: bytes, bundle: Bundle, limits: ServerConfig) -> list[UserRequest]:
  """The users of a /v1/recommend body, parsed for `bundle`.

  Raises:
    BadRequest: naming the field (and the user's index, for {"users": [...]}).
  """
  if len(raw) > limits.max_body_bytes:
    raise BadRequest(f"body: {len(raw)} bytes, over the limit of {limits.max_body_bytes}", 413)
  records, where = _user_records(decode_json(raw), limits)
  requests = []
  for number, record in enumerate(records):
    prefix = where.format(number)
    items = record.get("items") if isinstance(record, dict) else None
    if isinstance(items, list) and len(items) > limits.max_history:
      raise BadRequest(
        f"{prefix}field 'items': {len(items)} actions, over this server's limit of "
        f"{limits.max_history}; send the most recent (the model reads the last "
        f"{bundle.recommender.serving.model.config.max_length})",
        413,
      )
    try:
      requests.append(
        batch.parse_request(record, bundle.outcome_names, bundle.vocabulary, bundle.surface_names)
      )
    except ValueError as error:
      raise BadRequest(f"{prefix}{error}") from None
  return requests


def metadata(bundle: Bundle, batcher: MicroBatcher) -> dict:
  """What GET /v1/metadata answers: the bundle, the batching, what was served so far."""
  manifest, model = bundle.manifest, bundle.recommender.serving.model.config
  return {
    "bundle_version": bundle.version,
    "step": manifest.step,
    "created": manifest.created,
    "git_commit": manifest.git_commit,
    "config_hash": manifest.config_hash,
    "num_items": model.num_items,
    "item_ids": "integer" if bundle.vocabulary.is_integer else "string",
    "outcomes": list(bundle.outcome_names),
    "surfaces": list(bundle.surface_names),
    "max_history_read": model.max_length,
    "num_results": bundle.recommender.config.num_results,
    "batch_sizes": list(bundle.recommender.batch_sizes),
    "max_batch": batcher.max_batch,
    "max_wait_ms": batcher.max_wait_ms,
    "served_micro_batches": batcher.batches,
    "served_users": batcher.users,
  }


class _AsciiJSONResponse(JSONResponse):
  """JSON with every non-ASCII character escaped: a user id holding a lone surrogate, which
  UTF-8 cannot encode, is echoed back as sent instead of failing the answer."""

  def render(self, content: object) -> bytes:
    return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _answer(content: dict, bundle: Bundle, status: int = 200, **headers: str) -> JSONResponse:
  return _AsciiJSONResponse(
    {"bundle_version": bundle.version, **content},
    status_code=status,
    headers={VERSION_HEADER: bundle.version, **headers},
  )


def create_app(slot: BundleSlot, config: ServerConfig) -> Starlette:
  """The ASGI application serving `slot`'s bundle; its lifespan runs the micro-batcher."""
  batcher = MicroBatcher(config.max_batch, config.max_wait_ms, config.max_queue)

  async def recommend(request: Request) -> JSONResponse:
    bundle = slot.current  # parses and serves this request, even if a reload swaps meanwhile
    try:
      declared = request.headers.get("content-length", "0")
      if declared.isdigit() and int(declared) > config.max_body_bytes:  # not read at all
        raise BadRequest(f"body: {declared} bytes, over the limit of {config.max_body_bytes}", 413)
      users = parse_body(await request.body(), bundle, config)
      recommendations = await batcher.submit(bundle, users)
    except BadRequest as error:
      return _answer({"error": str(error)}, bundle, error.status)
    except Overloaded as error:
      return _answer({"error": f"overloaded: {error}"}, bundle, 503, **{"Retry-After": "1"})
    names = bundle.outcome_names
    return _answer(
      {
        "step": bundle.manifest.step,
        "recommendations": [batch.format_recommendation(r, names) for r in recommendations],
      },
      bundle,
    )

  async def healthz(request: Request) -> JSONResponse:
    return _answer({"status": "ok"}, slot.current)

  async def describe(request: Request) -> JSONResponse:
    bundle = slot.current
    return _answer(metadata(bundle, batcher), bundle)

  async def reload(request: Request) -> JSONResponse:
    raw = await request.body()
    try:
      body = decode_json(raw) if raw.strip() else {}
    except BadRequest as error:
      return _answer({"error": str(error)}, slot.current, error.status)
    directory = body.get("bundle") if isinstance(body, dict) else None
    if (
      not isinstance(body, dict)
      or set(body) - {"bundle"}
      or ("bundle" in body and not isinstance(directory, str))
    ):
      return _answer({"error": "body: expected {} or {'bundle': DIR}"}, slot.current, 400)
    try:
      old, new = await asyncio.to_thread(slot.reload, directory)
    except MissingPathError as error:
      return _answer({"error": f"field 'bundle': {error}"}, slot.current, 400)
    except BundleError as error:  # the served bundle stays
      return _answer({"error": str(error)}, slot.current, 409)
    return _answer({"previous_version": old.version, "step": new.manifest.step}, new)

  @contextlib.asynccontextmanager
  async def lifespan(app: Starlette) -> AsyncIterator[None]:
    batcher.start()
    try:
      yield
    finally:
      await asyncio.to_thread(batcher.stop)

  return Starlette(
    routes=[
      Route("/v1/recommend", recommend, methods=["POST"]),
      Route("/healthz", healthz, methods=["GET"]),
      Route("/v1/metadata", describe, methods=["GET"]),
      Route("/admin/reload", reload, methods=["POST"]),
    ],
    lifespan=lifespan,
  )


def listen(host: str, port: int) -> socket.socket:
  """A socket bound to `host`:`port` (0: a free port; `getsockname` tells which).

  Raises:
    OSError: the address is taken or not this machine's.
  """
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError:
    sock.close()
    raise
  sock.set_inheritable(True)
  return sock


def http_server(app: Starlette) -> uvicorn.Server:
  """uvicorn serving `app`: `.run(sockets=[listen(...)])`; SIGTERM or SIGINT (in the main
  thread) or `should_exit = True` stops it taking connections and finishes the requests in
  flight, then the micro-batcher's queue."""
  config = uvicorn.Config(
    app, log_level="warning", access_log=False, backlog=2048, timeout_graceful_shutdown=30
  )
  return uvicorn.Server(config)
