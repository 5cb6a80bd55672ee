"""One point of a cost curve (`unipinrec/bench/scale.py`), run in a process of its own so that
the process's peak RSS is the point's.

  python -m unipinrec.bench.scale_point KIND SIZE_JSON RESULT_PATH

KIND is `train_step` (SIZE_JSON {"items": N, "steps": S}), `evaluate` ({"users": U,
"items": N}) or `movielens` ({"rows": R, "folder": PATH}: writes an ML-20M-shaped log there).
RESULT_PATH receives {"seconds": ..., "peak_rss_bytes": ...}: the timed part's wall time and
the process's peak resident set (`peak_rss.peak_rss_bytes`).
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

from unipinrec import sharding
from unipinrec.bench.peak_rss import peak_rss_bytes
from unipinrec.config import RunConfig
from unipinrec.evaluation import catalogue
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.records import write_json_atomic
from unipinrec.train import partition
from unipinrec.train import state as state_lib
from unipinrec.types import TrainBatch

# A small model: the item table and the sampled softmax are what grows with the catalogue.
SMALL_MODEL = ModelConfig(max_length=16, embed_dim=16, action_dim=8, mlp_dim=32, head_hidden_dim=16)
BATCH_SIZE, SLATES, SLATE_SIZE, OUTCOMES = 32, 2, 8, 2
EVAL_DIM, EVAL_SEEN = 32, 20  # query width and seen items per user of the evaluation points


def random_batch(num_items: int, seed: int) -> TrainBatch:
  """A full-length training batch of uniform items 1..N: the step's cost, not its quality."""
  rng = np.random.default_rng(seed)
  length = SMALL_MODEL.max_length
  outcomes = np.eye(OUTCOMES, dtype=bool)[rng.integers(0, OUTCOMES, (BATCH_SIZE, length))]
  slate_outcomes = rng.random((BATCH_SIZE, SLATES, SLATE_SIZE, OUTCOMES)) < 0.2
  return TrainBatch(
    items=rng.integers(1, num_items + 1, (BATCH_SIZE, length), dtype=np.int32),
    outcomes=outcomes,
    times=np.cumsum(rng.integers(1, 600, (BATCH_SIZE, length)), axis=1).astype(np.float32),
    surfaces=np.zeros((BATCH_SIZE, length), np.int32),
    history_lengths=np.full(BATCH_SIZE, length, np.int32),
    slate_prefix=np.broadcast_to(np.array([length // 2, length], np.int32), (BATCH_SIZE, SLATES)),
    slate_times=np.zeros((BATCH_SIZE, SLATES), np.float32),
    slate_surfaces=np.zeros((BATCH_SIZE, SLATES), np.int32),
    slate_items=rng.integers(1, num_items + 1, (BATCH_SIZE, SLATES, SLATE_SIZE), dtype=np.int32),
    slate_outcomes=slate_outcomes,
  )


def train_step_seconds(num_items: int, steps: int) -> float:
  """Median wall time of the default sampled-softmax train step of `SMALL_MODEL` over N items
  (compilation and one warm-up step untimed)."""
  run = RunConfig(batch_size=BATCH_SIZE)
  model = UniPinRec(SMALL_MODEL.with_data_sizes(num_items, OUTCOMES, 1))
  mesh = sharding.make_mesh(run.mesh)
  optimizer = state_lib.make_optimizer(run.optimizer, run.num_steps)
  example = state_lib.example_batch(model, BATCH_SIZE, SLATES, SLATE_SIZE)
  state, shardings = partition.create_sharded_state(
    model, optimizer, mesh, jax.random.key(0), example
  )
  step = partition.jit_train_step(model, optimizer, run.step, 1, mesh, shardings)
  batches = [
    TrainBatch(**sharding.global_batch(mesh, vars(random_batch(num_items, i)), BATCH_SIZE))
    for i in range(2)
  ]
  log_frequency = np.full(num_items + 1, -np.log(num_items), np.float32)
  seconds = []
  for i in range(steps + 1):
    start = time.perf_counter()
    state, metrics = step(state, batches[i % 2], log_frequency)
    jax.block_until_ready((state, metrics))
    seconds.append(time.perf_counter() - start)
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"{num_items} items: non-finite loss")
  return statistics.median(seconds[1:])


def evaluate_seconds(num_users: int, num_items: int) -> float:
  """Wall time of the exact chunked full-catalogue ranks (`catalogue.catalogue_ranks`) of U
  random queries against N random item vectors, each user with `EVAL_SEEN` seen items."""
  rng = np.random.default_rng(0)
  scorer = catalogue.DotScorer(
    rng.normal(size=(num_users, EVAL_DIM)).astype(np.float32),
    rng.normal(size=(num_items + 1, EVAL_DIM)).astype(np.float32),
    0.05,
  )
  targets = rng.integers(1, num_items + 1, num_users)
  seen = list(rng.integers(1, num_items + 1, (num_users, EVAL_SEEN)))
  start = time.perf_counter()
  catalogue.catalogue_ranks(scorer, num_items, targets, seen)
  return time.perf_counter() - start


def main(argv: list[str]) -> None:
  """KIND SIZE_JSON RESULT_PATH (the module docstring)."""
  kind, size, result = argv[0], json.loads(argv[1]), pathlib.Path(argv[2])
  if kind == "train_step":
    seconds = train_step_seconds(size["items"], size["steps"])
  elif kind == "evaluate":
    seconds = evaluate_seconds(size["users"], size["items"])
  elif kind == "movielens":
    from unipinrec.bench.movielens_shaped import write_movielens_shaped  # another branch's

    start = time.perf_counter()
    write_movielens_shaped(pathlib.Path(size["folder"]), size["rows"])
    seconds = time.perf_counter() - start
  else:
    raise ValueError(f"unknown point kind {kind!r}")
  write_json_atomic(str(result), {"seconds": seconds, "peak_rss_bytes": peak_rss_bytes()})


if __name__ == "__main__":
  main(sys.argv[1:])
