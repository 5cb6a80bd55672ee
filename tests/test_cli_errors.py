"""Every launcher reports a user's mistake as one line on stderr with exit status 2, no traceback;
a bug keeps its traceback. Each mistake is found before any training or compilation."""

import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hang_guard import HANG_SECONDS

from experiments.configs import synthetic
from unipinrec import checkpoint
from unipinrec.config import from_mapping, to_dict
from unipinrec.data.pipeline import training_iterator
from unipinrec.export import bundle_format
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig, Manifest
from unipinrec.serving.batch import INDEX_DIR
from unipinrec.train.experiment import CONFIG_FILE, setup_experiment

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = REPO / "experiments" / "configs"
SYNTHETIC = f"--config={CONFIGS / 'synthetic.py'}"
ML100K = f"--config={CONFIGS / 'ml100k.py'}:runlocal"
TMP = "{tmp}"  # the cases' folder (`launches`), in a case's arguments and expected text
# Where train writes config.json before it reads the data: one per case, as the cases run at
# once and a work directory takes one training at a time.
WORKDIR = "--workdir={tmp}/new_"
RECOMMEND = ["--users={tmp}/users.jsonl", "--out={tmp}/out.jsonl"]
WORKDIR_LAUNCHERS = ("evaluate", "evaluate_generation", "ranking_gap", "bench_serving", "plot")

# name: (launcher, arguments, texts the error line names)
CASES = {
  **{
    f"{module}-bad-value": (module, ["--config.model.embed_dim=abc"], ["embed_dim=abc", "'abc'"])
    for module in ("train", "memory", "world_baselines")
  },
  "unknown-field": ("memory", ["--config.model.embed_dimz=3"], ["embed_dimz=3", "'embed_dimz'"]),
  "unknown-field-after-config": ("memory", [SYNTHETIC, "--config.modelz.a=3"], ["'modelz'"]),
  "invalid-value": ("memory", ["--config.model.kernel=foo"], ["config.model:", "kernel", "'foo'"]),
  "missing-config-file": (
    "memory",
    ["--config=nowhere/c.py"],
    ["--config=nowhere/c.py", "No such"],
  ),
  "unknown-variant": ("memory", [f"{SYNTHETIC}:nope"], ["synthetic.py:nope", "variant 'nope'"]),
  "unknown-flag": ("memory", ["--wrokdir=x"], ["'wrokdir'"]),
  # Without libtpu (CI) or with it (an unknown slice name), the same one line.
  "unknown-topology": ("memory", ["--topology=v9z:1x1"], ["--topology=v9z:1x1", "libtpu"]),
  "devices-and-topology": ("memory", ["--devices=8", "--topology=v5e:8x8"], ["give one"]),
  "missing-required-flag": ("bench_serving", [], ["--workdir", "must have a value"]),
  "not-synthetic": ("world_baselines", [ML100K], ["config.data.source='movielens'"]),
  "bad-data-row": (
    "train",
    [
      ML100K,
      "--config.data.path={tmp}/ml-100k",
      "--config.data.tfds_dir={tmp}/tfds",
      WORKDIR + "bad_row",
    ],
    ["{tmp}/ml-100k/u.data:3: field 'item'", "got 'x'"],
  ),
  "missing-data": (
    "train",
    [ML100K, "--config.data.path={tmp}/no", WORKDIR + "missing_data"],
    ["{tmp}/no", "no data"],
  ),
  "missing-benchmark-data": ("bench_train", ["--sizes=ml100k", "--ml100k_path=/no"], ["/no"]),
  **{
    f"{module}-missing-workdir": (module, ["--workdir={tmp}/none"], ["{tmp}/none"])
    for module in WORKDIR_LAUNCHERS
  },
  "recommend-missing-workdir": ("recommend", ["--workdir={tmp}/none", *RECOMMEND], ["{tmp}/none"]),
  "recommend-workdir-and-bundle": (
    "recommend",
    ["--workdir={tmp}/run", "--bundle={tmp}/run", *RECOMMEND],
    ["exactly one of --bundle and --workdir"],
  ),
  "recommend-neither-workdir-nor-bundle": (
    "recommend",
    RECOMMEND,
    ["exactly one of --bundle and --workdir"],
  ),
  "recommend-missing-bundle": ("recommend", ["--bundle={tmp}/none", *RECOMMEND], ["{tmp}/none"]),
  "recommend-bundle-of-another-format-version": (
    "recommend",
    ["--bundle={tmp}/old-bundle", *RECOMMEND],
    ["{tmp}/old-bundle/manifest.json: bundle format version 0"],
  ),
  "export-missing-workdir": ("export", ["--workdir={tmp}/none", "--out={tmp}/b"], ["{tmp}/none"]),
  "index-of-another-model": (
    "recommend",
    ["--workdir={tmp}/mismatched", *RECOMMEND],
    ["{tmp}/mismatched/index", "step: index has 7, model has 0"],
  ),
}


def _launch(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", f"experiments.{module}", *args],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )


def _write_run(workdir: pathlib.Path) -> None:
  """A runlocal synthetic work directory: config.json and the checkpoint of step 0."""
  run = from_mapping(synthetic.get_config("runlocal").to_dict())
  experiment = setup_experiment(run)
  manager = checkpoint.make_manager(str(workdir), run.checkpoint)
  iterator = training_iterator(experiment.data.train_examples, run.batch_size, run.seed)
  checkpoint.save(manager, 0, experiment.initial_state, iterator, force=True)
  manager.wait_until_finished()
  (workdir / CONFIG_FILE).write_text(json.dumps(to_dict(run)))


def _write_inputs(tmp: pathlib.Path) -> None:
  """The cases' files: a data file bad on line 3, a users file, a run, one with a foreign index,
  a bundle of an unknown format version."""
  (tmp / "ml-100k").mkdir()
  (tmp / "ml-100k" / "u.data").write_text("1\t10\t5\t881250949\n1\t11\t3\t881250950\n2\tx\t4\t9\n")
  (tmp / "users.jsonl").write_text(json.dumps({"user": "a", "items": [1, 2]}) + "\n")
  _write_run(tmp / "run")
  shutil.copytree(tmp / "run", tmp / "mismatched")
  foreign = Manifest(
    step=7,
    config_hash="0" * 16,
    num_items=5,
    embed_dim=4,
    outcome_names=("a",),
    index=IndexConfig(),
  )
  store.write(str(tmp / "mismatched" / INDEX_DIR), foreign, np.ones((6, 4), np.float32))
  (tmp / "old-bundle").mkdir()
  (tmp / "old-bundle" / bundle_format.MANIFEST_FILE).write_text(
    json.dumps({"format": bundle_format.FORMAT, "format_version": 0})
  )


@pytest.fixture(scope="module")
def launches(tmp_path_factory) -> tuple[pathlib.Path, dict[str, concurrent.futures.Future]]:
  """The cases' folder and their launches, three at a time: each costs mostly a JAX import."""
  tmp = tmp_path_factory.mktemp("cases")
  _write_inputs(tmp)
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    yield (
      tmp,
      {
        name: pool.submit(_launch, module, *(arg.replace(TMP, str(tmp)) for arg in args))
        for name, (module, args, _) in CASES.items()
      },
    )


def _assert_one_line_error(done: subprocess.CompletedProcess, *named: str) -> None:
  """Status 2, no traceback or usage text, and the last line is the error naming `named`."""
  assert done.returncode == 2, done.stderr[-3000:]
  assert "Traceback" not in done.stderr and "--helpshort" not in done.stderr, done.stderr[-3000:]
  # splitlines also splits at the carriage returns of progress bars.
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  assert [line for line in lines if line.startswith("error: ")] == lines[-1:], lines[-5:]
  for text in named:
    assert text in lines[-1], lines[-1]


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_is_one_line_and_status_2(case, launches):
  tmp, futures = launches
  _assert_one_line_error(
    futures[case].result(), *(t.replace(TMP, str(tmp)) for t in CASES[case][2])
  )
  assert not (tmp / "out.jsonl").exists()


_MAIN_RAISING = """
from experiments import cli
from unipinrec.errors import MissingPathError

def main(argv):
  raise {}

cli.run(main)
"""


@pytest.mark.parametrize(
  "error, status, shown",
  [
    ("ZeroDivisionError('a bug')", 1, ["Traceback", "ZeroDivisionError: a bug"]),
    ("MissingPathError('x: no such file')", 2, ["error: x: no such file"]),
  ],
  ids=["bug", "user-error"],
)
def test_only_user_errors_lose_their_traceback(error, status, shown):
  done = subprocess.run(
    [sys.executable, "-c", _MAIN_RAISING.format(error)],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=REPO,
  )
  assert done.returncode == status, done.stderr[-3000:]
  for text in shown:
    assert text in done.stderr
  assert ("Traceback" in done.stderr) == (status == 1)
