"""The cost-curve benchmark: per-point peak RSS, the fitted exponent, the JSON and the plots."""

import math
import os
import sys

import numpy as np
import pytest

from unipinrec.bench import scale


def test_exponent_is_the_log_log_slope():
  assert scale.fitted_exponent([10, 1000], [2.0, 200.0]) == pytest.approx(1.0)
  # Three points off a line: the least-squares slope, by hand.
  x, y = np.log([1e3, 1e4, 1e5]), np.log([1.0, 3.0, 20.0])
  slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
  assert scale.fitted_exponent([1e3, 1e4, 1e5], [1.0, 3.0, 20.0]) == pytest.approx(slope)
  assert math.isnan(scale.fitted_exponent([5], [1.0]))


def test_peak_rss_is_each_points_own(tmp_path):
  (tmp_path / "allocate.py").write_text(
    "import numpy as np\nprint(np.ones(300 * 2**20 // 8).sum())\n"
  )
  (tmp_path / "idle.py").write_text("")
  env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.getcwd()}"}
  big = scale.measure_module("allocate", [], env)
  small = scale.measure_module("idle", [], env)
  # The forking parent's memory (this test's) is in neither.
  assert big["peak_rss_bytes"] > 300 * 2**20 > small["peak_rss_bytes"] and big["seconds"] > 0
  with pytest.raises(RuntimeError, match="exited with status 3"):
    scale.run_checked([sys.executable, "-c", "raise SystemExit(3)"])


@pytest.mark.slow
def test_train_step_and_evaluate_curves_at_tiny_sizes(tmp_path):
  config = scale.ScaleConfig(
    prepare_rows=(), train_items=(300, 900), train_steps=1, eval_sizes=((20, 300), (40, 600))
  )
  curves = scale.run_curves(config)
  assert set(curves) == {"train_step", "evaluate"}
  for name, sizes in (("train_step", [300, 900]), ("evaluate", [20 * 300, 40 * 600])):
    points = curves[name]["points"]
    assert [p["size"] for p in points] == sizes
    assert all(p["seconds"] > 0 and p["peak_rss_bytes"] > 2**20 for p in points)
    by_hand = (np.log(points[1]["seconds"]) - np.log(points[0]["seconds"])) / np.log(
      sizes[1] / sizes[0]
    )
    assert curves[name]["exponent"] == pytest.approx(by_hand)
  paths = scale.plot_curves(curves, tmp_path)
  assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
    "bench_scale_evaluate.png",
    "bench_scale_train_step.png",
  ]
