"""Cost curves: preparation, train step and evaluation time and peak RSS against size.

  python -m experiments.bench_scale --out=DIR [--prepare_rows=...] [--train_items=...]
                                    [--eval_sizes=UxN,...] [--train_steps=10]

Writes DIR/bench_scale.json ({"prepare", "train_step", "evaluate"}: each {"points": [{"size",
"seconds", "peak_rss_bytes", ...}], "exponent": the log-log slope of seconds on size}) and
DIR/bench_scale_<curve>.png. Every point runs in a fresh process, so its peak RSS is its own
(unipinrec/bench/scale.py says what each curve times). An empty size list leaves a curve out:
`--prepare_rows= --train_items=1000,4000 --eval_sizes=100x2000,200x4000` is a quick check.
"""

import pathlib
import shlex
import sys
import time

from absl import flags

from experiments import cli
from unipinrec.bench import scale
from unipinrec.records import git_commit, write_json_atomic

_DEFAULTS = scale.ScaleConfig()
_OUT = flags.DEFINE_string("out", None, "Folder for bench_scale.json and the plots.", required=True)
_PREPARE_ROWS = flags.DEFINE_list(
  "prepare_rows", [str(n) for n in _DEFAULTS.prepare_rows], "Rows of each preparation point."
)
_TRAIN_ITEMS = flags.DEFINE_list(
  "train_items", [str(n) for n in _DEFAULTS.train_items], "Catalogue size of each train point."
)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", _DEFAULTS.train_steps, "Timed steps per point.")
_EVAL_SIZES = flags.DEFINE_list(
  "eval_sizes",
  [f"{users}x{items}" for users, items in _DEFAULTS.eval_sizes],
  "USERSxITEMS of each evaluation point.",
)


def _integers(flag: flags.FlagHolder) -> tuple[int, ...]:
  try:
    values = tuple(int(value) for value in flag.value)
  except ValueError as error:
    raise cli.CommandLineError(f"flag --{flag.name}: {error}") from error
  if any(value < 1 for value in values):
    raise cli.CommandLineError(f"flag --{flag.name}: sizes must be positive, got {flag.value}")
  return values


def _eval_sizes() -> tuple[tuple[int, int], ...]:
  sizes = []
  for value in _EVAL_SIZES.value:
    users, _, items = value.partition("x")
    if not (users.isdigit() and items.isdigit() and int(users) and int(items)):
      raise cli.CommandLineError(f"flag --eval_sizes: {value!r} is not USERSxITEMS")
    sizes.append((int(users), int(items)))
  return tuple(sizes)


def main(argv: list[str]) -> None:
  """Measures the curves, writes the JSON and the plots, prints the exponents."""
  del argv
  start = time.time()
  if _TRAIN_STEPS.value < 1:
    raise cli.CommandLineError(f"flag --train_steps: expected at least 1, got {_TRAIN_STEPS.value}")
  config = scale.ScaleConfig(
    prepare_rows=_integers(_PREPARE_ROWS),
    train_items=_integers(_TRAIN_ITEMS),
    train_steps=_TRAIN_STEPS.value,
    eval_sizes=_eval_sizes(),
  )
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  curves = scale.run_curves(config)
  document = {
    **curves,
    "command": " ".join(
      ["python -m experiments.bench_scale"] + [shlex.quote(a) for a in sys.argv[1:]]
    ),
    "git_commit": git_commit(),
    "wall_seconds": time.time() - start,
  }
  write_json_atomic(str(out / "bench_scale.json"), document)
  scale.plot_curves(curves, out)
  for name, curve in curves.items():
    print(f"{name}: exponent {curve['exponent']:.3f} over {len(curve['points'])} points")


if __name__ == "__main__":
  cli.run(main)
