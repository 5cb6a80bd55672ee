"""Micro-batching: one worker thread runs the queued requests of one bundle together.

Requests are queued with the bundle that parsed them; the worker takes the first, then more
of the same bundle until `max_batch` users or `max_wait_ms` after the first, and runs them as
one `Recommender.recommend` call (a request of more users than `max_batch` runs alone). A full
queue refuses at once (`Overloaded`); answers go back to each request's event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time

from absl import logging

from unipinrec.serving.bundle import Bundle
from unipinrec.serving.recommender import Recommendation, UserRequest


class Overloaded(RuntimeError):
  """The queue is full."""


@dataclasses.dataclass
class _Job:
  """One HTTP request's users, the bundle that parsed them, and where the answer goes."""

  bundle: Bundle
  requests: list[UserRequest]
  future: asyncio.Future
  loop: asyncio.AbstractEventLoop


_STOP = object()


def _settle(future: asyncio.Future, result: list[Recommendation] | BaseException) -> None:
  if future.cancelled():  # the client went away
    return
  if isinstance(result, BaseException):
    future.set_exception(result)
  else:
    future.set_result(result)


class MicroBatcher:
  """A worker thread running queued requests in micro-batches of one bundle each."""

  def __init__(self, max_batch: int, max_wait_ms: float, max_queue: int):
    """Micro-batches of at most `max_batch` users (unless one request has more), each waiting
    at most `max_wait_ms` after its first request; at most `max_queue` requests waiting."""
    self.max_batch, self.max_wait_ms, self.max_queue = max_batch, max_wait_ms, max_queue
    self._queue: queue.Queue = queue.Queue(max_queue)
    self._held: _Job | object | None = None  # taken, but the first of the next batch
    self._thread = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
    self.batches = self.users = 0  # served so far

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    """Serves what is queued, then ends the worker."""
    self._queue.put(_STOP)
    self._thread.join()

  def submit(self, bundle: Bundle, requests: list[UserRequest]) -> asyncio.Future:
    """Queues `requests` for `bundle`; the future gets their recommendations, in order.

    Raises:
      Overloaded: `max_queue` requests are waiting already.
    """
    loop = asyncio.get_running_loop()
    job = _Job(bundle, requests, loop.create_future(), loop)
    try:
      self._queue.put_nowait(job)
    except queue.Full:
      raise Overloaded(f"{self.max_queue} requests queued; retry later") from None
    return job.future

  def _next_batch(self) -> list[_Job] | None:
    """Jobs of one bundle, at most `max_batch` users unless the first alone has more."""
    first = self._held if self._held is not None else self._queue.get()
    self._held = None
    if first is _STOP:
      return None
    jobs, users = [first], len(first.requests)
    deadline = time.monotonic() + self.max_wait_ms / 1000
    while users < self.max_batch:
      wait = deadline - time.monotonic()
      try:
        job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
      except queue.Empty:
        break
      fits = job is not _STOP and job.bundle is first.bundle
      if not fits or users + len(job.requests) > self.max_batch:
        self._held = job
        break
      jobs.append(job)
      users += len(job.requests)
    return jobs

  def _work(self) -> None:
    while (jobs := self._next_batch()) is not None:
      requests = [request for job in jobs for request in job.requests]
      self.batches += 1
      self.users += len(requests)
      try:
        results: list[Recommendation] | BaseException = jobs[0].bundle.recommender.recommend(
          requests
        )
      except Exception as error:  # a bug: every job of the batch gets a 500
        logging.exception("a micro-batch of %d users failed", len(requests))
        results = error
      start = 0
      for job in jobs:
        answer = (
          results
          if isinstance(results, BaseException)
          else results[start : start + len(job.requests)]
        )
        start += len(job.requests)
        job.loop.call_soon_threadsafe(_settle, job.future, answer)
