"""Times the jitted train step at SASRec's size and at the synthetic default's size.

  python -m experiments.bench_train [--sizes=sasrec,default] [--steps=30] [--output=PATH]
                                    [--noencoder] [--nomatmuls] [--chunk_anchors=N]

For each size: sequences per second (batch / median step time), XLA's FLOP
count of the compiled step, the achieved FLOP/s, and their share of the
float32 matmul peak measured in the same run (unipinrec/benchmark.py says how).
With --encoder (the default) a row "<size> encoder" also times the shared
transformer alone, forward and backward: the share of the peak the backbone
reaches at that size on this backend, to read the whole step's against. With
--matmuls (the default) a second table times each of the transformer's matmul
shapes at that size alone (projections over all tokens, attention per
sequence): no program made of such products can do better than they do.

Sizes:
  sasrec   SASRec's: width 50 (embed_dim 40 + action_dim 10, as width is their
           sum here), 2 blocks, 1 head, feed-forward width 50, history length
           200, batch 128; everything else is the synthetic default's.
  ml100k   SASRec's size on SASRec's data: experiments/configs/ml100k.py (its
           exact softmax over 1,682 films, rated slates) with the dimensions
           above. This is the step that SASRec's own speed on ml-100k compares
           with. It reads ../shared/data (or --ml100k_path).
  default  experiments/configs/synthetic.py unchanged.
  runlocal its `runlocal` variant, for a quick check of the benchmark itself.

Only the step is timed, so the synthetic sizes prepare a smaller world
(data.synthetic.num_users=300 instead of 6,000): batch shapes, the catalogue
and so the compiled step are the same as with the full world, while data
preparation takes seconds instead of a minute.
"""

import dataclasses
import os
import shlex
import sys
import time

import jax
import ml_collections
from absl import flags, logging

from experiments import cli, huge_pages
from experiments.configs import ml100k, synthetic
from unipinrec.bench import timing
from unipinrec.bench import train_step as benchmark
from unipinrec.config import from_mapping
from unipinrec.errors import MissingPathError
from unipinrec.records import git_commit, write_json_atomic
from unipinrec.train.experiment import setup_experiment

_SIZES = flags.DEFINE_list(
  "sizes", ["sasrec", "default"], "Sizes to time: sasrec, ml100k, default, runlocal."
)
_ML100K_PATH = flags.DEFINE_string(
  "ml100k_path", None, "The ml-100k folder for the ml100k size; default: the config's."
)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per size; the median is reported.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 5, "Untimed steps after compilation.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the table as JSON to this path.")
_CHUNK_ANCHORS = flags.DEFINE_integer(
  "chunk_anchors",
  None,
  "The softmax's anchors per chunk (step.loss.chunk_anchors) at every size; default: each "
  "config's own. 0 materialises all the logits at once.",
)
_ENCODER = flags.DEFINE_bool(
  "encoder", True, "Also time the shared transformer alone (forward and backward) at each size."
)
_MATMULS = flags.DEFINE_bool(
  "matmuls",
  True,
  "Also time the transformer's matmul shapes alone at each size: the share of the peak that "
  "one product of that size reaches.",
)

BENCHMARK_NUM_USERS = 300  # a small world: only the step is timed (see the module docstring)


def size_config(name: str, ml100k_path: str | None = None) -> ml_collections.ConfigDict:
  """The ml_collections config of a named size (synthetic sizes with the benchmark's small world).

  Args:
    name: sasrec, ml100k, default or runlocal (the module docstring says what each is).
    ml100k_path: the ml-100k folder of the ml100k size; None: the config's default.
  """
  if name == "runlocal":
    config = synthetic.get_config("runlocal")
  elif name in ("sasrec", "default"):
    config = synthetic.get_config()
  elif name == "ml100k":
    config = ml100k.get_config()
    if ml100k_path:
      config.data.path = ml100k_path
    if not os.path.isdir(config.data.path):
      raise MissingPathError(
        f"size ml100k: no ml-100k folder at {config.data.path}; pass --ml100k_path=FOLDER"
      )
  else:
    raise cli.CommandLineError(
      f"flag --sizes: unknown size {name!r}; expected sasrec, ml100k, default or runlocal"
    )
  if name in ("sasrec", "ml100k"):
    config.batch_size = 128
    config.model.max_length = 200
    config.model.embed_dim = 40
    config.model.action_dim = 10
    config.model.num_layers = 2
    config.model.num_heads = 1
    config.model.mlp_dim = 50  # SASRec's feed-forward is as wide as the model
  if name in ("sasrec", "default"):
    config.data.synthetic.num_users = BENCHMARK_NUM_USERS
  return config


def main(argv: list[str]) -> None:
  """Measures the matmul peak, then times each size's step; prints and writes the table."""
  del argv
  start = time.time()
  # Unknown names and a missing data folder fail here, before any timing.
  configs = {name: size_config(name, _ML100K_PATH.value) for name in _SIZES.value}
  if _CHUNK_ANCHORS.value is not None:
    for config in configs.values():
      config.step.loss.chunk_anchors = _CHUNK_ANCHORS.value
  logging.info("devices: %s", jax.devices())
  logging.info("measuring the float32 matmul peak")
  rates = timing.matmul_peak_flops()
  for n, rate in rates.items():
    logging.info("matmul %d: %.1f GFLOP/s", n, rate / 1e9)
  peak = max(rates.values())
  results, matmuls = [], {}
  for name, config in configs.items():
    logging.info("%s: preparing data and state", name)
    experiment = setup_experiment(from_mapping(config.to_dict()))
    if _ENCODER.value:  # first: the train step donates the state the encoder reads
      results.append(
        benchmark.benchmark_encoder(
          experiment, f"{name} encoder", peak, _STEPS.value, _WARMUP.value
        )
      )
    results.append(
      benchmark.benchmark_train_step(experiment, name, peak, _STEPS.value, _WARMUP.value)
    )
    if _MATMULS.value:
      matmuls[name] = benchmark.time_transformer_matmuls(experiment, peak)
  table = benchmark.format_table(results)
  wall_seconds = time.time() - start
  print(table)
  for name, shapes in matmuls.items():
    print(benchmark.format_matmul_table(name, shapes))
  print(f"devices: {jax.devices()}  wall time: {wall_seconds:.0f} s")
  if _OUTPUT.value:
    document = {
      "results": [dataclasses.asdict(r) for r in results],
      "matmul_shapes": {
        name: [dataclasses.asdict(m) for m in shapes] for name, shapes in matmuls.items()
      },
      "matmul_flops_per_second": {str(n): rate for n, rate in rates.items()},
      "peak_flops_per_second": peak,
      "steps": _STEPS.value,
      "warmup_steps": _WARMUP.value,
      "num_users": BENCHMARK_NUM_USERS,
      "devices": [str(d) for d in jax.devices()],
      "command": " ".join(
        ["python -m experiments.bench_train"] + [shlex.quote(a) for a in sys.argv[1:]]
      ),
      "git_commit": git_commit(),
      "wall_seconds": wall_seconds,
    }
    write_json_atomic(_OUTPUT.value, document)
    logging.info("wrote %s", _OUTPUT.value)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)
