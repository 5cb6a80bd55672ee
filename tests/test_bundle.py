"""The serving bundle: exported, loaded with nothing of training, verified, written atomically."""

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import flax.core
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hang_guard import HANG_SECONDS

from experiments.configs import synthetic
from unipinrec.config import ServingConfig, from_mapping, to_dict
from unipinrec.data.feature_spec import FeatureSpec
from unipinrec.errors import MissingPathError
from unipinrec.export import bundle as bundle_lib
from unipinrec.export import bundle_format as fmt
from unipinrec.export.checkpoint import restore_serving_model
from unipinrec.export.computations import Computations
from unipinrec.export.computations import export as export_computations
from unipinrec.index.manifest import IndexConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.serving import batch
from unipinrec.serving.bundle import Bundle
from unipinrec.train.experiment import CONFIG_FILE, setup_experiment
from unipinrec.train.loop import train
from unipinrec.train.state import example_batch
from unipinrec.types import Histories

REPO = pathlib.Path(__file__).resolve().parent.parent
SERVING = ServingConfig(num_candidates=32, num_results=10, batch_size=8)
EXTRA_BATCH = 3  # a second exported batch size
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(work directory, its served `ServingModel`, experiment) of a short runlocal training."""
  run = from_mapping(synthetic.get_config("runlocal").to_dict())
  run = dataclasses.replace(run, num_steps=20, serving=SERVING)
  workdir = tmp_path_factory.mktemp("run")
  (workdir / CONFIG_FILE).write_text(json.dumps(to_dict(run)))
  train(setup_experiment(run), str(workdir))
  serving, experiment = restore_serving_model(str(workdir))
  return workdir, serving, experiment


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("bundle")
  bundle_lib.export_workdir(str(trained[0]), str(out), batch_sizes=[EXTRA_BATCH])
  return out


def _user_lines(experiment) -> list[dict]:
  """JSON user lines of the held-out users (some with a condition or budgets), a cold-start
  user and one with an unknown item."""
  logs = experiment.data.logs
  names = logs.outcome_names
  lines = []
  for n, u in enumerate(experiment.data.eval_users):
    actions = slice(logs.action_offsets[u], logs.action_offsets[u + 1])
    line = {
      "user": int(u),
      "items": logs.action_items[actions].tolist(),
      "outcomes": [
        [names[o] for o in np.flatnonzero(row)] for row in logs.action_outcomes[actions]
      ],
      "times": logs.action_times[actions].tolist(),
      "surfaces": logs.action_surfaces[actions].tolist(),
    }
    if n % 5 == 1:
      line["budgets"] = {names[0]: 1, names[-1]: 2}
    elif n % 5 == 2:
      line["condition"] = names[-1]
    lines.append(line)
  return lines + [{"user": "cold", "items": []}, {"user": "unknown", "items": [3, 10**6]}]


@pytest.fixture(scope="module")
def users(trained, tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("users") / "users.jsonl"
  path.write_text("".join(json.dumps(line) + "\n" for line in _user_lines(trained[2])))
  return path


@pytest.fixture(scope="module")
def expected(trained, users, tmp_path_factory) -> list[dict]:
  """What the work directory's in-process Recommender answers."""
  out = tmp_path_factory.mktemp("expected") / "recs.jsonl"
  recommender = batch.workdir_recommender(str(trained[0]))
  summary = batch.recommend_file(recommender, str(users), str(out))
  assert summary == batch.FileSummary(len(_user_lines(trained[2])), 0)
  return [json.loads(line) for line in out.read_text().splitlines()]


def _assert_same_answers(got: list[dict], want: list[dict]) -> None:
  assert len(got) == len(want)
  for g, w in zip(got, want, strict=True):
    assert g["user"] == w["user"] and g["items"] == w["items"], (g["user"], g["items"], w["items"])
    assert g["retrieved_for"] == w["retrieved_for"] and g["cold_start"] == w["cold_start"]
    for field in ("scores", "retrieval_scores"):
      np.testing.assert_allclose(g[field], w[field], atol=TOLERANCE, err_msg=field)
    for name, values in w["probabilities"].items():
      np.testing.assert_allclose(g["probabilities"][name], values, atol=TOLERANCE)


# The launcher, where preparing data, restoring a work directory or tracing the model's Python
# code (rather than running the exported computations) would fail loudly.
_POISONED_LAUNCH = """
import runpy, sys
from unipinrec.model.unified import UniPinRec
from unipinrec.train import experiment

def refuse(*args, **kwargs):
  raise AssertionError("a bundle's serving path read training data or traced the model")

experiment.setup_experiment = experiment.restore_trained = experiment.read_run_config = refuse
UniPinRec.encode_last = UniPinRec.encode = UniPinRec.rank = UniPinRec.queries = refuse
sys.argv = ["recommend", *sys.argv[1:]]
runpy.run_module("experiments.recommend", run_name="__main__")
"""


def test_a_bundle_serves_in_a_fresh_process_as_its_work_directory_does(
  trained, bundle_dir, users, expected, tmp_path
):
  workdir = trained[0]
  away = workdir.with_name(workdir.name + "-away")
  out = tmp_path / "recs.jsonl"
  workdir.rename(away)  # the bundle alone must do
  try:
    done = subprocess.run(
      [sys.executable, "-c", _POISONED_LAUNCH, f"--bundle={bundle_dir}", f"--users={users}"]
      + [f"--out={out}"],
      capture_output=True,
      text=True,
      timeout=HANG_SECONDS,
      cwd=REPO,
      env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
  finally:
    away.rename(workdir)
  assert done.returncode == 0, done.stderr[-3000:]
  _assert_same_answers([json.loads(line) for line in out.read_text().splitlines()], expected)


def test_a_loaded_bundle_holds_the_vocabulary_names_and_every_batch_size(
  trained, bundle_dir, users, expected
):
  _, serving, experiment = trained
  bundle = Bundle.load(str(bundle_dir), batch_sizes=[EXTRA_BATCH])
  assert bundle.vocabulary == experiment.data.item_vocabulary
  assert bundle.outcome_names == experiment.data.logs.outcome_names
  assert bundle.surface_names == experiment.data.logs.surface_names
  assert bundle.manifest.step == serving.step and bundle.manifest.config_hash == serving.config_hash
  assert bundle.manifest.batch_sizes == (1, 2, EXTRA_BATCH, 4, SERVING.batch_size)
  assert bundle.recommender.batch_sizes == (EXTRA_BATCH,)
  requests = [
    batch.parse_request(line, bundle.outcome_names) for line in _user_lines(experiment)[:7]
  ]
  got = [
    batch.format_recommendation(r, bundle.outcome_names)
    for r in bundle.recommender.recommend(requests)
  ]
  _assert_same_answers(json.loads(json.dumps(got)), expected[:7])  # calls of 3, 3 and 1 + 2 pads
  every_size = Bundle.load(str(bundle_dir)).recommender
  assert every_size.batch_sizes == bundle.manifest.batch_sizes
  got = [  # calls of 4 and 3
    batch.format_recommendation(r, bundle.outcome_names) for r in every_size.recommend(requests)
  ]
  _assert_same_answers(json.loads(json.dumps(got)), expected[:7])
  with pytest.raises(fmt.BundleError, match="--batch_sizes=5"):
    Bundle.load(str(bundle_dir), batch_sizes=[4, 5])


def _assert_same_computations(exported, serving, experiment) -> None:
  """`exported` and the model's jitted computations agree on held-out histories."""
  b, config = SERVING.batch_size, serving.model.config
  eval_examples = experiment.data.eval_examples
  fields = {k: v[:b] for k, v in eval_examples.ranking_history.items()}
  histories = Histories(
    items=fields["items"].astype(np.int32),
    outcomes=fields["outcomes"].astype(bool),
    times=fields["times"].astype(np.float32),
    surfaces=fields["surfaces"].astype(np.int32),
    lengths=fields["history_lengths"].astype(np.int32),
  )
  conditions = np.broadcast_to(
    np.arange(config.num_conditions, dtype=np.int32), (b, config.num_conditions)
  )
  candidates = np.random.default_rng(0).integers(1, config.num_items + 1, (b, 32), np.int32)
  request_times = eval_examples.ranking_times[:b].astype(np.float32)
  surfaces = eval_examples.ranking_surfaces[:b].astype(np.int32)
  outputs = []
  for computations in (exported, Computations.jitted(serving.model)):
    retrieved = computations.retrieve(serving.params, histories, conditions)
    probabilities = computations.rank(
      serving.params, retrieved.cache, histories.times, candidates, request_times, surfaces
    )
    outputs.append(jax.device_get((retrieved, probabilities)))
  assert jax.tree.structure(outputs[0]) == jax.tree.structure(outputs[1])
  for got, want in zip(*(jax.tree.leaves(o) for o in outputs), strict=True):
    np.testing.assert_allclose(got, want, atol=TOLERANCE)
  assert np.ptp(outputs[0][1]) > 0.01  # the probabilities are not all alike


def test_the_bundles_computations_equal_the_models_own(trained, bundle_dir):
  _, serving, experiment = trained
  version = pathlib.Path(fmt.version_path(str(bundle_dir)))
  names = fmt.computation_files(SERVING.batch_size)
  exported = Computations.deserialize(*((version / name).read_bytes() for name in names))
  _assert_same_computations(exported, serving, experiment)


# History features (`repeat_buckets`) add the history items and their bias h to what retrieval
# returns; item features (hashed ids and a content vector here) add frozen tables and an MLP.
_VARIANTS = {
  "history features": dict(repeat_buckets=4),
  "item features": dict(item_id_part="hashed", hash_rows=40, content_dim=6, item_bias=False),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_computations_of_other_models_export_too(trained, tmp_path, variant):
  _, serving, experiment = trained
  model = UniPinRec(dataclasses.replace(serving.model.config, **_VARIANTS[variant]))
  example = example_batch(model, 2, 1, 3)

  @jax.jit
  def init():
    params = model.init(jax.random.key(0), example, jnp.zeros(example.items.shape, bool))
    leaves, tree = jax.tree.flatten(flax.core.meta.unbox(params["params"]))  # as served
    keys = jax.random.split(jax.random.key(1), len(leaves))
    # Noise on every parameter: h (initialised at 0) differs between history items, and the
    # (zero-initialised) content table between items.
    noisy = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, noisy)

  params = init()
  other = dataclasses.replace(serving, model=model, params=params)
  exported = Computations.deserialize(
    *export_computations(model, params, SERVING.batch_size, 32, ("cpu",))
  )
  _assert_same_computations(exported, other, experiment)
  if variant == "item features":  # the bundle's index holds the encoder's vectors
    vocabulary = experiment.data.item_vocabulary
    one_user = dataclasses.replace(SERVING, batch_size=1)  # one export: this checks the index
    index_config = IndexConfig(dtype="f32", exact=True)
    path = bundle_lib.write_bundle(
      str(tmp_path),
      other,
      vocabulary,
      ("a",),
      one_user,
      index_config,
      platforms=("cpu",),
      feature_spec=FeatureSpec(content_dim=6, categorical=(), numeric=()),
    )
    loaded = Bundle.load(path)
    vectors = np.asarray(model.apply({"params": params}, method=model.item_vectors))
    np.testing.assert_allclose(loaded.recommender.index.item_vectors, vectors, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors[1:], axis=1), 1.0, rtol=1e-4)


def _copy(bundle_dir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  copy = tmp_path / "copy"
  shutil.copytree(fmt.version_path(str(bundle_dir)), copy)
  return copy


@pytest.mark.parametrize(
  "name", [fmt.PARAMS_FILE, "index/items.usearch", "computations/rank_b8.bin", fmt.MODEL_FILE]
)
def test_a_changed_byte_is_refused_naming_the_file(bundle_dir, tmp_path, name):
  copy = _copy(bundle_dir, tmp_path)
  file = copy / name
  content = bytearray(file.read_bytes())
  content[len(content) // 2] ^= 0x01
  file.write_bytes(content)
  with pytest.raises(fmt.BundleError, match=f"{file}: checksum mismatch"):
    Bundle.load(str(copy))


def test_an_unknown_format_version_or_no_bundle_is_refused(bundle_dir, tmp_path):
  copy = _copy(bundle_dir, tmp_path)
  manifest = json.loads((copy / fmt.MANIFEST_FILE).read_text())
  manifest["format_version"] = fmt.FORMAT_VERSION + 1
  (copy / fmt.MANIFEST_FILE).write_text(json.dumps(manifest))
  with pytest.raises(fmt.BundleError, match=f"{copy / fmt.MANIFEST_FILE}: bundle format version"):
    Bundle.load(str(copy))
  with pytest.raises(MissingPathError, match="no serving bundle"):
    Bundle.load(str(tmp_path / "nowhere"))


# A second export killed (os._exit, no clean-up) while it writes the computations.
_CRASHING_EXPORT = """
import os, sys
from unipinrec.export import bundle as bundle_lib
from unipinrec.serving.bundle import Bundle

loaded = Bundle.load(sys.argv[1])
bundle_lib.computations.export = lambda *args, **kwargs: os._exit(3)
recommender = loaded.recommender
bundle_lib.write_bundle(
  sys.argv[1], recommender.serving, loaded.vocabulary, loaded.surface_names, recommender.config,
  recommender.index.manifest.index,
)
"""


def test_an_export_that_fails_or_crashes_leaves_the_previous_bundle_current(
  trained, tmp_path, monkeypatch
):
  _, serving, experiment = trained
  directory = str(tmp_path / "bundle")
  arguments = (serving, experiment.data.item_vocabulary, (), SERVING, experiment.run.index)
  first = bundle_lib.write_bundle(directory, *arguments, platforms=("cpu",))

  def fail(*args, **kwargs):
    raise OSError("disk full")

  with monkeypatch.context() as patch:
    patch.setattr(bundle_lib.computations, "export", fail)
    with pytest.raises(OSError, match="disk full"):
      bundle_lib.write_bundle(directory, *arguments, platforms=("cpu",))
  assert sorted(os.listdir(directory)) == ["current", os.path.basename(first)]

  crashed = subprocess.run(
    [sys.executable, "-c", textwrap.dedent(_CRASHING_EXPORT), directory],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert crashed.returncode == 3, crashed.stderr[-3000:]
  assert [n for n in os.listdir(directory) if n.startswith(".tmp-")], "no crash leftovers"
  assert Bundle.load(directory).path == first

  second = bundle_lib.write_bundle(directory, *arguments, platforms=("cpu",))
  assert Bundle.load(directory).path == second != first
  assert sorted(os.listdir(directory)) == ["current", os.path.basename(second)]


def test_a_bundle_exported_for_another_platform_is_refused(trained, tmp_path):
  _, serving, experiment = trained
  directory = str(tmp_path / "bundle")
  vocabulary, index = experiment.data.item_vocabulary, experiment.run.index
  bundle_lib.write_bundle(directory, serving, vocabulary, (), SERVING, index, platforms=("cuda",))
  with pytest.raises(fmt.BundleError, match="exported for cuda, .*--platforms=cpu"):
    Bundle.load(directory)


def test_jax_export_serializes_after_usearch_is_loaded_through_unipinrec():
  # usearch's native library loaded before jaxlib's empties StableHLO's version strings;
  # `unipinrec/__init__.py` loads jax first, so any unipinrec import path is safe.
  code = textwrap.dedent(
    """
    import unipinrec.bench.recall  # imports usearch
    import jax
    import jax.numpy as jnp

    spec = jax.ShapeDtypeStruct((3,), jnp.float32)
    exported = jax.export.export(jax.jit(lambda x: 2 * x), platforms=["cpu"])(spec)
    print(len(exported.serialize()))
    """
  )
  done = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert int(done.stdout.split()[-1]) > 0
