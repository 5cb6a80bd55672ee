"""Times serving with and without the shared KV cache, and the index's recall and speed.

  python -m experiments.bench_serving --workdir=runs/synthetic

Writes WORKDIR/bench_serving.json and prints the table: users per second and
p50/p99 latency of (a) ranking on the cache, (b) re-encoding the history for
ranking, (c) two separate models, at each history length, with XLA's FLOPs;
then ANN recall@K and queries per second against exact search on the trained
catalogue and on a synthetic clustered one (unipinrec/serving/benchmark.py).
`--ann_items=20000 --lengths=16 --requests=3` makes it a quick check.
"""

from absl import flags

from experiments import cli, huge_pages, launch
from unipinrec.bench import serving as benchmark

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's work directory.", required=True)
_LENGTHS = flags.DEFINE_list("lengths", ["200", "1000"], "History lengths timed.")
_CANDIDATES = flags.DEFINE_integer("num_candidates", 256, "Candidates ranked per user.")
_USERS = flags.DEFINE_integer("users_per_request", 8, "Users per request.")
_REQUESTS = flags.DEFINE_integer("requests", 40, "Timed requests per path and length.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed requests per path first.")
_ANN_ITEMS = flags.DEFINE_integer("ann_items", 1_000_000, "Synthetic catalogue size; 0 skips it.")
_ANN_QUERIES = flags.DEFINE_integer("ann_queries", 1000, "Queries for recall and speed.")
_EXPANSIONS = flags.DEFINE_list(
  "expansions", ["64", "128", "256", "512"], "expansion_search swept."
)


def main(argv):
  del argv
  launch.load_run_config(_WORKDIR.value)  # fails early on a wrong directory; quiets libraries
  bench = benchmark.BenchConfig(
    lengths=tuple(int(n) for n in _LENGTHS.value),
    num_candidates=_CANDIDATES.value,
    users_per_request=_USERS.value,
    requests=_REQUESTS.value,
    warmup=_WARMUP.value,
    ann_items=_ANN_ITEMS.value,
    ann_queries=_ANN_QUERIES.value,
    expansions=tuple(int(n) for n in _EXPANSIONS.value),
  )
  document = benchmark.run_benchmark(_WORKDIR.value, bench)
  print(benchmark.format_table(document))


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
