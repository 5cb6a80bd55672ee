"""bench_server end to end on a small bundle: its servers, load, hot swap and bad input."""

import json
import pathlib
import subprocess
import sys

from hang_guard import HANG_SECONDS
from serving_models import export_noisy_bundle

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_bench_server_measures_both_modes_a_swap_and_bad_input(tmp_path):
  bundle = tmp_path / "bundle"
  export_noisy_bundle(bundle, seed=0)
  out = tmp_path / "bench"
  done = subprocess.run(
    [sys.executable, "-m", "experiments.bench_server", f"--bundle={bundle}", f"--out={out}"]
    + ["--seconds=0.5", "--concurrency=1,3", "--swap_clients=3", "--malformed=40"],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  document = json.loads((out / "bench_server.json").read_text())
  assert [(r["batching"], r["concurrency"]) for r in document["runs"]] == [
    (True, 1),
    (True, 3),
    (False, 1),
    (False, 3),
  ]
  for run in document["runs"]:
    assert run["requests"] > 0 and run["errors"] == 0
    assert 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"]
    assert run["requests_per_second"] == run["requests"] / 0.5
  assert set(document["ceiling"]["users_per_second"]) == {"1", "2", "4"}
  swap = document["hot_swap"]
  assert swap["dropped"] == swap["errors"] == swap["old_after_swap"] == 0
  assert len(swap["versions_seen"]) == 2 and swap["reload_status"] == 200
  bad = document["malformed"]
  assert bad["sent"] == bad["answered_4xx"] == bad["naming_the_field"] == 40
  assert bad["answered_5xx"] == bad["valid_beside_failed"] == 0 and bad["valid_sent"] > 0
  assert bad["documented_sent"] == bad["documented_as_documented"] > 0
  checks = document["checks"]
  assert checks["hot_swap_drops_none"] and checks["malformed_all_4xx_naming_the_field"]
  assert not checks["batching_3x_requests_per_second_at_32"]  # 32 clients were not run
  assert "| on | 3 |" in done.stdout and "PASS hot_swap_drops_none" in done.stdout
