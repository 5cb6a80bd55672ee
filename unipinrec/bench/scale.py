"""Cost curves: preparation, train step and evaluation time and peak memory against size.

Each point runs in a fresh process (`unipinrec/bench/scale_point.py`, or `experiments.prepare`
under `unipinrec/bench/peak_rss.py` for preparation), which reports its own peak RSS (the
kernel's high-water mark of its resident set). A curve's `exponent` is the least-squares slope of
log seconds against log size: 1 is linear.

- prepare: `experiments.prepare` with the ml100k config on an ML-20M-shaped `ratings.csv` of
  R rows (`movielens_shaped.write_movielens_shaped`, written by an untimed process first);
  the point's seconds are the whole process's wall time, imports included.
- train_step: the sampled-softmax train step of a small model over a catalogue of N items
  (`scale_point.train_step_seconds`).
- evaluate: exact chunked full-catalogue ranks of U users over N items; the size is U x N.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
from absl import logging

from unipinrec.evaluation.plots import plt, save_figure

PREPARE_CONFIG = "experiments/configs/ml100k.py"


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
  """The sizes of each curve; an empty tuple leaves the curve out."""

  prepare_rows: tuple[int, ...] = (1_000_000, 5_000_000, 20_000_000, 50_000_000)
  train_items: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000)
  train_steps: int = 10  # timed steps per point; the median is reported
  # (users, items) of the evaluation points: users x items from 1e8 to 8e9 scores.
  eval_sizes: tuple[tuple[int, int], ...] = (
    (1_000, 100_000),
    (2_000, 200_000),
    (4_000, 400_000),
    (8_000, 1_000_000),
  )


def fitted_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
  """The least-squares slope of log(seconds) against log(size); NaN below two sizes."""
  if len(set(sizes)) < 2:
    return float("nan")
  return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def run_checked(command: Sequence[str], env: dict | None = None) -> float:
  """Runs `command` to completion: its wall seconds.

  Raises:
    RuntimeError: the command failed (its status named).
  """
  start = time.perf_counter()
  status = subprocess.run(list(command), env=env, check=False).returncode
  if status:
    raise RuntimeError(f"{' '.join(command)} exited with status {status}")
  return time.perf_counter() - start


def _point_command(kind: str, size: dict, result: pathlib.Path) -> list[str]:
  return [sys.executable, "-m", "unipinrec.bench.scale_point", kind, json.dumps(size), str(result)]


def measure_point(kind: str, size: dict) -> dict:
  """One `scale_point` point: its size fields, the timed part's seconds and the peak RSS."""
  with tempfile.TemporaryDirectory(prefix=f"bench_scale_{kind}_") as folder:
    result = pathlib.Path(folder) / "result.json"
    run_checked(_point_command(kind, size, result))
    measured = json.loads(result.read_text())
  logging.info(
    "%s %s: %.3f s, peak RSS %.0f MiB",
    kind,
    size,
    measured["seconds"],
    measured["peak_rss_bytes"] / 2**20,
  )
  return {**size, **measured}


def measure_module(module: str, args: Sequence[str], env: dict | None = None) -> dict:
  """`python -m module args` in a fresh process: its wall seconds and peak RSS
  (`peak_rss`'s runner)."""
  with tempfile.TemporaryDirectory(prefix="bench_scale_module_") as folder:
    result = pathlib.Path(folder) / "peak.json"
    runner = [sys.executable, "-m", "unipinrec.bench.peak_rss", str(result), module]
    seconds = run_checked([*runner, *args], env)
    return {"seconds": seconds, **json.loads(result.read_text())}


def measure_prepare(rows: int) -> dict:
  """Writes an ML-20M-shaped log of `rows` rows, then times `experiments.prepare` on it."""
  with tempfile.TemporaryDirectory(prefix="bench_scale_prepare_") as folder:
    data, tfds = pathlib.Path(folder) / "ratings", pathlib.Path(folder) / "tfds"
    data.mkdir()
    size = {"rows": rows, "folder": str(data)}
    run_checked(_point_command("movielens", size, pathlib.Path(folder) / "written.json"))
    args = [
      f"--config={PREPARE_CONFIG}",
      f"--config.data.path={data}",
      f"--config.data.tfds_dir={tfds}",
    ]
    env = {**os.environ, "TFDS_DATA_DIR": str(tfds)}
    measured = measure_module("experiments.prepare", args, env)
  logging.info(
    "prepare %d rows: %.1f s, peak RSS %.0f MiB",
    rows,
    measured["seconds"],
    measured["peak_rss_bytes"] / 2**20,
  )
  return {"size": rows, "rows": rows, **measured}


def _curve(points: list[dict]) -> dict:
  return {
    "points": points,
    "exponent": fitted_exponent([p["size"] for p in points], [p["seconds"] for p in points]),
  }


def run_curves(config: ScaleConfig) -> dict[str, dict]:
  """Each curve with sizes in `config`: {"points": [...], "exponent": slope} by curve name."""
  curves = {}
  if config.prepare_rows:
    curves["prepare"] = _curve([measure_prepare(rows) for rows in config.prepare_rows])
  if config.train_items:
    points = [
      measure_point("train_step", {"items": items, "steps": config.train_steps})
      for items in config.train_items
    ]
    curves["train_step"] = _curve([{"size": p["items"], **p} for p in points])
  if config.eval_sizes:
    points = [
      measure_point("evaluate", {"users": users, "items": items})
      for users, items in config.eval_sizes
    ]
    curves["evaluate"] = _curve([{"size": p["users"] * p["items"], **p} for p in points])
  return curves


AXES = {
  "prepare": "rows of ratings.csv",
  "train_step": "catalogue size (items)",
  "evaluate": "users x items",
}


def plot_curves(curves: dict[str, dict], folder: pathlib.Path) -> list[str]:
  """One PNG per curve in `folder`: seconds and peak RSS against size, log-log."""
  paths = []
  for name, curve in curves.items():
    sizes = [p["size"] for p in curve["points"]]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(10, 4))
    time_axis.loglog(sizes, [p["seconds"] for p in curve["points"]], "o-")
    time_axis.set(
      xlabel=AXES[name], ylabel="seconds", title=f"{name}: exponent {curve['exponent']:.2f}"
    )
    memory_axis.loglog(sizes, [p["peak_rss_bytes"] / 2**20 for p in curve["points"]], "o-")
    memory_axis.set(xlabel=AXES[name], ylabel="peak RSS (MiB)", title=f"{name}: memory")
    paths.append(save_figure(figure, str(folder / f"bench_scale_{name}.png")))
  return paths
