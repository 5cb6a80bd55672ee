"""Matplotlib figures of generation.json: the budget trade-off and tokens per step."""

from __future__ import annotations

import os
import tempfile

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402


def save_figure(figure, path: str) -> str:
  """Writes a PNG atomically, so a crash never leaves half a file."""
  handle, temporary = tempfile.mkstemp(suffix=".png", dir=os.path.dirname(path) or ".")
  os.close(handle)
  figure.savefig(temporary, dpi=120, bbox_inches="tight")
  plt.close(figure)
  os.replace(temporary, path)
  return path


def plot_budgets(conditioning: dict, path: str) -> str:
  """True outcome rates and hit rate of the retrieved list as the budget moves to saves."""
  sweep = conditioning["budgets"]
  x = [point["save_fraction"] for point in sweep]
  figure, rates = plt.subplots(figsize=(6, 4))
  for name, colour in (("save", "tab:red"), ("click", "tab:blue")):
    rates.plot(x, [p[f"true_{name}_rate"] for p in sweep], "o-", color=colour, label=f"P({name})")
    best = conditioning["oracle_best"][name][f"true_{name}_rate"]
    rates.axhline(best, color=colour, linestyle=":", label=f"oracle's best P({name})")
  rates.set_xlabel("share of the budget asking for saves")
  rates.set_ylabel(f"mean true probability, top {conditioning['k']}")
  hits = rates.twinx()
  hits.plot(x, [p["hr"] for p in sweep], "s--", color="grey", label="hit rate of the next action")
  hits.set_ylabel("hit rate")
  lines = rates.get_legend_handles_labels()
  more = hits.get_legend_handles_labels()
  rates.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center left")
  rates.set_title("Outcome budgets: from all-click to all-save")
  return save_figure(figure, path)


def plot_tokens(rows: list[dict], path: str) -> str:
  """Recall, diversity and throughput against query vectors per user, by method."""
  panels = (
    ("recall", "unordered recall"),
    ("unique_share", "unique items across users"),
    ("vectors_per_second", "generated vectors / s"),
  )
  figure, axes = plt.subplots(1, len(panels), figsize=(13, 3.6))
  for method, style in (
    ("multi_token", "o-"),
    ("multi_token_merged", "^:"),
    ("autoregressive", "s--"),
  ):
    points = sorted((r for r in rows if r["method"] == method), key=lambda r: r["vectors"])
    for axis, (key, label) in zip(axes, panels, strict=True):
      axis.plot([r["vectors"] for r in points], [r[key] for r in points], style, label=method)
      axis.set_xlabel("query vectors per user")
      axis.set_title(label)
  axes[-1].set_yscale("log")
  axes[0].legend(fontsize=8)
  return save_figure(figure, path)


def plot_generation(document: dict, out_dir: str) -> list[str]:
  """Every figure a generation.json supports, as PNGs in `out_dir`."""
  paths = [plot_tokens(document["tokens"], os.path.join(out_dir, "generation_tokens.png"))]
  if "conditioning" in document:
    paths.append(plot_budgets(document["conditioning"], os.path.join(out_dir, "budgets.png")))
  return paths
