"""Load-tests the online server on 127.0.0.1: micro-batching on and off, a hot swap, bad input.

  python -m experiments.bench_server --bundle=bundles/synthetic --out=runs/bench_server

First times the bundle's `Recommender` alone at each exported batch size (`ceiling`: what
micro-batching can gain at most on this machine). Then starts `python -m experiments.serve`
on a copy of the bundle twice, micro-batching on (the serve defaults) and off
(--max_batch=1), and drives it with 1, 8, 32 and 128 concurrent clients for --seconds each;
with batching on, also a hot swap to a new version under 32 clients (--seconds before and
after it) and --malformed bad requests mixed 1:1 with valid ones. Writes
OUT/bench_server.json (`ceiling`, `runs`, `hot_swap`, `malformed`, and `checks`: each target
of the server's issue, true or false) and prints the table. Client and server share the
machine: the figures are for both.
"""

import logging as std_logging
import os
import shutil
import tempfile

from absl import flags, logging

from experiments import cli, launch
from unipinrec import records
from unipinrec.bench import server_load
from unipinrec.export import bundle_format as fmt
from unipinrec.serving import server
from unipinrec.serving.bundle import Bundle

_BUNDLE = flags.DEFINE_string("bundle", None, "A serving bundle directory.", required=True)
_OUT = flags.DEFINE_string("out", None, "Where bench_server.json goes.", required=True)
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Timed seconds per concurrency.")
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "8", "32", "128"], "Clients at once.")
_SWAP_CLIENTS = flags.DEFINE_integer("swap_clients", 32, "Clients during the hot swap.")
_MALFORMED = flags.DEFINE_integer("malformed", 1000, "Malformed requests sent.")
_COMPARED_AT = 32  # clients at which batching must win (if run)


def checks(document: dict) -> dict:
  """Each target of the server's issue, true or false."""
  runs = {(run["batching"], run["concurrency"]): run for run in document["runs"]}
  on, off = runs.get((True, _COMPARED_AT)), runs.get((False, _COMPARED_AT))
  swap, bad = document["hot_swap"], document["malformed"]
  compared = on is not None and off is not None
  return {
    "no_errors_at_any_concurrency": all(run["errors"] == 0 for run in document["runs"]),
    "batching_3x_requests_per_second_at_32": compared
    and on["requests_per_second"] >= 3 * off["requests_per_second"],
    "batching_p99_no_worse_at_32": compared and on["p99_ms"] <= off["p99_ms"],
    "hot_swap_drops_none": swap["dropped"] == 0 and swap["errors"] == 0,
    "hot_swap_serves_both_versions_in_order": len(swap["versions_seen"]) == 2
    and swap["old_after_swap"] == 0,
    "malformed_all_4xx_naming_the_field": bad["answered_4xx"]
    == bad["naming_the_field"]
    == bad["sent"]
    > 0,
    "valid_beside_malformed_all_succeed": bad["valid_beside_failed"] == 0,
    "documented_cases_answered_as_documented": bad["documented_as_documented"]
    == bad["documented_sent"],
  }


def format_table(document: dict) -> str:
  rates = document["ceiling"]["users_per_second"]
  lines = [
    "model alone, users/s by batch size: "
    + ", ".join(f"{size}: {rate:.0f}" for size, rate in rates.items())
    + f" (best / smallest batch: {document['ceiling']['best_over_smallest_batch']:.2f}x)",
    "",
    "| batching | clients | requests/s | p50 ms | p90 ms | p99 ms | errors |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for run in document["runs"]:
    lines.append(
      f"| {'on' if run['batching'] else 'off'} | {run['concurrency']} | "
      f"{run['requests_per_second']:.1f} | {run['p50_ms']:.1f} | {run['p90_ms']:.1f} | "
      f"{run['p99_ms']:.1f} | {run['errors']} |"
    )
  swap, bad = document["hot_swap"], document["malformed"]
  lines += [
    "",
    f"hot swap: {swap['requests']} requests, {swap['dropped']} dropped, {swap['errors']} "
    f"errors, versions {' -> '.join(swap['versions_seen'])}",
    f"malformed: {bad['sent']} sent, {bad['answered_4xx']} answered 4xx "
    f"({bad['naming_the_field']} naming the field), {bad['answered_5xx']} 5xx; "
    f"{bad['valid_beside_failed']} of {bad['valid_sent']} valid beside them failed",
    "",
    *(f"{'PASS' if ok else 'FAIL'} {name}" for name, ok in document["checks"].items()),
  ]
  return "\n".join(lines)


def main(argv):
  del argv
  try:
    concurrency = [int(n) for n in _CONCURRENCY.value]
  except ValueError as error:
    raise cli.CommandLineError(f"flag --concurrency: {error}") from None
  version = fmt.version_path(_BUNDLE.value)  # MissingPathError: one line, status 2
  launch.prepare_process()
  std_logging.getLogger("httpx").setLevel(std_logging.WARNING)  # a line per request otherwise
  bundle = server.warm(Bundle.load(version))
  users = server.sample_user_lines(bundle, 64)
  os.makedirs(_OUT.value, exist_ok=True)
  document = {
    "command": launch.command("bench_server"),
    "git_commit": records.git_commit(),
    "bundle": version,
    "ceiling": server_load.model_ceiling(bundle, _SECONDS.value / 2),
    "runs": [],
  }
  with tempfile.TemporaryDirectory(dir=_OUT.value) as scratch:
    served = os.path.join(scratch, "bundle")  # swapped by the bench, never the user's bundle
    server_load.copy_version(_BUNDLE.value, served)
    for batching in (True, False):
      flags_ = [] if batching else ["--max_batch=1"]
      with server_load.ServerProcess(served, flags_) as process:
        logging.info("batching %s: %s", "on" if batching else "off", process.url)
        for run in server_load.load_runs(process.url, users, concurrency, _SECONDS.value):
          logging.info("%s", run)
          document["runs"].append({"batching": batching, **run})
        if batching:
          document["hot_swap"] = server_load.hot_swap(
            process.url, served, _BUNDLE.value, users, _SWAP_CLIENTS.value, _SECONDS.value
          )
          document["malformed"] = server_load.malformed_load(
            process.url,
            users,
            bundle.vocabulary.is_integer,
            _MALFORMED.value,
            _SWAP_CLIENTS.value,
            600,
          )
    shutil.rmtree(served, ignore_errors=True)
  document["checks"] = checks(document)
  records.write_json_atomic(os.path.join(_OUT.value, "bench_server.json"), document)
  print(format_table(document))


if __name__ == "__main__":
  cli.run(main)
