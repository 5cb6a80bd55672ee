"""`experiments.world_baselines`: a world's baselines without training, as training reports them."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from hang_guard import HANG_SECONDS

from experiments.configs import synthetic
from unipinrec.config import from_mapping
from unipinrec.data.dataset import prepare_data
from unipinrec.evaluation import evaluate

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = REPO / "experiments" / "configs"


def _world_baselines(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "experiments.world_baselines", *args],
    cwd=REPO,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
  )


def test_world_figures_match_the_oracles_computed_directly(tmp_path):
  output = tmp_path / "world.json"
  done = _world_baselines(
    f"--config={CONFIG / 'synthetic.py'}:runlocal",
    "--config.data.synthetic.drift=0.05",
    f"--output={output}",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  document = json.loads(output.read_text())
  assert document["config"]["data"]["synthetic"]["drift"] == 0.05

  config = synthetic.get_config("runlocal")
  config.data.synthetic.drift = 0.05
  run = from_mapping(config.to_dict())
  data = prepare_data(run.data, run.model.max_length, run.seed)
  names = data.logs.outcome_names
  oracle = evaluate.evaluate_oracle(data.world, data.eval_examples, names)
  history = evaluate.evaluate_history_oracle(data.world, data.eval_examples, names)
  baselines = document["baselines"]
  for key in ("hr@10", "ndcg@10", "mrr"):
    np.testing.assert_allclose(baselines["oracle"]["retrieval"][key], oracle["retrieval"][key])
  np.testing.assert_allclose(
    baselines["history_oracle"]["ranking"]["auc_engaged"], history["ranking"]["auc_engaged"]
  )
  checks = document["checks"]
  np.testing.assert_allclose(
    checks["history_oracle_auc_engaged_gap_to_oracle"],
    oracle["ranking"]["auc_engaged"] - history["ranking"]["auc_engaged"],
  )
  np.testing.assert_allclose(
    checks["oracle_auc_engaged_over_popularity"],
    oracle["ranking"]["auc_engaged"] - baselines["popularity"]["ranking"]["auc_engaged"],
  )


def test_public_data_is_refused_with_the_reason(tmp_path):
  done = _world_baselines(f"--config={CONFIG / 'ml100k.py'}", f"--output={tmp_path / 'w.json'}")
  assert done.returncode != 0
  assert "only a synthetic world has oracles" in done.stderr
  assert not (tmp_path / "w.json").exists()
