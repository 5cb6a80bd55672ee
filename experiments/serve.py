"""Serves a bundle over HTTP: micro-batched recommendations, health, metadata, hot reload.

  python -m experiments.serve --bundle=bundles/synthetic --port=8000
  curl -s localhost:8000/v1/recommend -d '{"user": "u1", "items": [12, 7, 3]}'

Loads the bundle (`python -m experiments.export` writes it) and compiles each of its batch
sizes before it listens, then prints `listening on http://HOST:PORT` on stdout (--port=0
picks a free port). unipinrec/serving/server.py documents the endpoints and how requests
are batched, bounded and swapped; unipinrec/serving/batch.py the user fields. SIGTERM
finishes the requests in flight, then exits.
"""

import dataclasses
import sys

from absl import flags, logging

from experiments import cli, huge_pages, launch
from unipinrec.serving import server
from unipinrec.serving.bundle import Bundle

_DEFAULTS = server.ServerConfig()
_TIMED_SECONDS = 0.3  # per batch size, choosing --max_batch
_BUNDLE = flags.DEFINE_string("bundle", None, "A serving bundle directory.", required=True)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every one).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one.")
_MAX_BATCH = flags.DEFINE_integer(
  "max_batch",
  None,
  "Users per micro-batch; 1 serves every request alone. Default: the exported batch size "
  "that serves the most users/s here, timed at start (on CPUs a small one, on GPUs the largest).",
)
_MAX_WAIT = flags.DEFINE_float(
  "max_wait_ms", _DEFAULTS.max_wait_ms, "How long a micro-batch waits for more requests."
)
_MAX_QUEUE = flags.DEFINE_integer(
  "max_queue", _DEFAULTS.max_queue, "Requests waiting at most; beyond, 503 at once."
)
_MAX_USERS = flags.DEFINE_integer("max_users", _DEFAULTS.max_users, "Users per request at most.")
_MAX_HISTORY = flags.DEFINE_integer(
  "max_history", _DEFAULTS.max_history, "Actions per user's history at most."
)


def main(argv):
  del argv
  try:  # checked before anything slow
    config = server.ServerConfig(
      max_batch=1 if _MAX_BATCH.value is None else _MAX_BATCH.value,
      max_wait_ms=_MAX_WAIT.value,
      max_queue=_MAX_QUEUE.value,
      max_users=_MAX_USERS.value,
      max_history=_MAX_HISTORY.value,
    )
  except ValueError as error:
    raise cli.CommandLineError(f"flag --{error}") from None
  launch.prepare_process()
  try:
    sock = server.listen(_HOST.value, _PORT.value)
  except OSError as error:
    raise cli.CommandLineError(f"--host/--port {_HOST.value}:{_PORT.value}: {error}") from None
  bundle = server.warm(Bundle.load(_BUNDLE.value))
  logging.info("bundle %s: step %d", bundle.version, bundle.manifest.step)
  if _MAX_BATCH.value is None:
    rates = server.users_per_second(bundle, _TIMED_SECONDS)
    config = dataclasses.replace(config, max_batch=max(rates, key=rates.get))
    logging.info(
      "users/s by batch size: %s; micro-batches of up to %d users",
      ", ".join(f"{size}: {rate:.0f}" for size, rate in rates.items()),
      config.max_batch,
    )
  http = server.http_server(server.create_app(server.BundleSlot(_BUNDLE.value, bundle), config))
  host, port = sock.getsockname()[:2]
  print(f"listening on http://{host}:{port}", flush=True)
  http.run(sockets=[sock])
  sys.exit(0 if http.started else 1)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
