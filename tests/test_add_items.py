"""Items added to a served bundle from feature files alone: encoded, indexed, retrieved, ranked."""

import os
import pathlib
import subprocess
import sys

import flax.core
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hang_guard import HANG_SECONDS

from unipinrec import versions
from unipinrec.config import ServingConfig
from unipinrec.data.feature_spec import CategoricalColumn, FeatureSpec, read_new_items
from unipinrec.data.interactions import DataFormatError
from unipinrec.data.item_feature_files import read_item_features
from unipinrec.data.item_features import NumericColumn
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.export import bundle as bundle_lib
from unipinrec.export import bundle_format as fmt
from unipinrec.export.add_items import add_items
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.item_encoder import feature_tables
from unipinrec.model.unified import UniPinRec
from unipinrec.serving.bundle import Bundle
from unipinrec.serving.recommender import Recommender, UserRequest
from unipinrec.train.state import example_batch

REPO = pathlib.Path(__file__).resolve().parent.parent
N, C, MULTIPLE = 20, 4, 32  # 20 items in tables of 32 rows: room for 11 more
IDS = [100 + 3 * i for i in range(N)]  # the data set's own ids
TWIN = 5  # internal id of the item the first new item copies
SERVING = ServingConfig(num_candidates=8, num_results=5, batch_size=1)
GENRES = ("a", "b", "c", "d")


def _write_content(path: pathlib.Path, ids, rows) -> str:
  path.write_text(
    "".join(
      f"{i}," + ",".join(f"{x:.6f}" for x in row) + "\n" for i, row in zip(ids, rows, strict=True)
    )
  )
  return str(path)


def _write_side(path: pathlib.Path, ids, genres, years, prices) -> str:
  side = "".join(
    f"{i},{g},{y},{p}\n" for i, g, y, p in zip(ids, genres, years, prices, strict=True)
  )
  path.write_text("id,genres,year,price\n" + side)
  return str(path)


def _training_files(folder: pathlib.Path):
  """Paths of the training feature files, and their content, genres, years and prices."""
  rng = np.random.default_rng(0)
  genres = ["|".join(rng.choice(GENRES, rng.integers(1, 3), replace=False)) for _ in range(N)]
  years = [str(1990 + 5 * (i % 3)) for i in range(N)]
  prices = [f"{p:.2f}" for p in rng.uniform(1, 50, N)]
  content = rng.normal(size=(N, C))
  paths = (
    _write_content(folder / "content.csv", IDS, content),
    _write_side(folder / "side.csv", IDS, genres, years, prices),
  )
  return paths, (content, genres, years, prices)


def _export(directory: pathlib.Path) -> tuple[str, tuple]:
  """A bundle of a small model whose parameters are all noise but the features', trained on
  feature files; its path and the files' rows."""
  (content_path, side_path), rows = _training_files(directory.parent)
  vocabulary, features, _ = read_item_features(
    ItemVocabulary(IDS), content_path, side_path, ("year",), ("genres",), ("price",)
  )
  config = ModelConfig(
    num_items=N,
    num_outcomes=2,
    max_length=6,
    embed_dim=8,
    action_dim=8,
    mlp_dim=16,
    head_hidden_dim=16,
    side_dim=3,
    item_bias=True,
    offsets_seconds=(0.0,),
    relative_position_buckets=0,
    repeat_buckets=0,
    dropout_rate=0.0,
    item_table_multiple=MULTIPLE,
    item_id_part="none",
  ).with_item_features(features.shapes)
  model = UniPinRec(config)
  example = example_batch(model, 2, 1, 3)

  @jax.jit
  def init():
    params = model.init(jax.random.key(0), example, jnp.zeros(example.items.shape, bool))
    leaves, tree = jax.tree.flatten(flax.core.meta.unbox(params["params"]))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    # Noise everywhere, the item bias's unused rows too: a new item's bias must be set to 0.
    return jax.tree.unflatten(
      tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )

  params = jax.device_get(init())
  for name, table in feature_tables(features).items():
    params["tokenizer"][name] = np.zeros_like(params["tokenizer"][name])
    params["tokenizer"][name][: N + 1] = table
  path = bundle_lib.write_bundle(
    str(directory),
    ServingModel(model, params, 3, "hash", ("click", "save")),
    vocabulary,
    (),
    SERVING,
    IndexConfig(dtype="f32", exact=True),
    platforms=("cpu",),
    feature_spec=FeatureSpec.of(features),
  )
  return path, rows


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  return _export(tmp_path_factory.mktemp("features") / "bundle")


def _serving(version: str) -> tuple[ServingModel, Bundle]:
  """The bundle version's model run from the model's code (the reference), and the bundle."""
  bundle = Bundle.load(version)
  return bundle.recommender.serving, bundle


# Exports a model, adds items twice (the second exports again) and compiles its computations
# from the model's code twice: over 10 s on 2 cores.
@pytest.mark.slow
def test_added_items_are_encoded_indexed_retrieved_and_ranked(exported, tmp_path):
  first, (content, genres, years, prices) = exported
  directory = os.path.dirname(first)
  # An id already in the bundle (skipped), a twin of item TWIN, and one with a genre and a
  # year never seen in training and no content row.
  twin = TWIN - 1
  content_path = _write_content(tmp_path / "new.csv", [IDS[0], 7], content[[0, twin]])
  side_path = _write_side(
    tmp_path / "new_side.csv",
    [IDS[0], 7, 9],
    [genres[0], genres[twin], "zzz|a"],
    [years[0], years[twin], "2050"],
    [prices[0], prices[twin], "12.5"],
  )
  second = add_items(directory, content_path, side_path)
  assert versions.current(directory) == second != first

  old_model, old = _serving(first)  # (c) the old version still loads, unchanged
  new_model, new = _serving(second)
  assert old.manifest.revision == 0 and new.manifest.revision == 1
  assert old_model.model.config.num_items == N and new_model.model.config.num_items == N + 2
  assert new.vocabulary.to_internal(np.array([7, 9])).tolist() == [N + 1, N + 2]
  for name in fmt.computation_files(1) + (fmt.ENCODER_FILE,):  # room in the tables: kept
    assert new.manifest.files[name] == old.manifest.files[name]

  # (a) The index holds what the model's own code computes from the new parameters.
  model, params = new_model.model, new_model.params
  want = np.asarray(model.apply({"params": params}, method=model.item_vectors))
  vectors = np.asarray(new.recommender.index.item_vectors)
  np.testing.assert_allclose(vectors, want, atol=1e-5)
  np.testing.assert_array_equal(vectors[: N + 1], old.recommender.index.item_vectors)
  np.testing.assert_allclose(vectors[N + 1, :-1], vectors[TWIN, :-1], atol=1e-5)  # same features
  assert vectors[N + 1, -1] == vectors[N + 2, -1] == 0.0  # no learned bias
  # The new rows as training would read them: its vocabulary, its price statistics.
  tokenizer = params["tokenizer"]
  np.testing.assert_array_equal(tokenizer["item_features_categorical_1"][N + 2], [1, 0])  # "a"
  np.testing.assert_array_equal(tokenizer["item_features_categorical_0"][N + 2], [0])  # 2050
  np.testing.assert_array_equal(tokenizer["item_features_content"][N + 2], 0.0)
  numbers = np.asarray(prices, float)
  np.testing.assert_allclose(
    tokenizer["item_features_numeric"][N + 2], (12.5 - numbers.mean()) / numbers.std(), rtol=1e-5
  )

  # (b) Searching with the twin's vector finds it and its twin first.
  assert set(new.recommender.index.search(vectors[N + 1 : N + 2], 2)[0]) == {TWIN, N + 1}

  # Histories and candidates with new items: the bundle answers as the model's code does.
  request = UserRequest(
    user="u",
    items=np.array([9, IDS[3], 7]),
    outcomes=np.array([[True, False], [False, True], [True, False]]),
    times=np.array([10.0, 20.0, 30.0]),
    surfaces=np.zeros(3, int),
  )
  reference = Recommender(new_model, new.recommender.index, SERVING, None, new.vocabulary)
  got, want = new.recommender.recommend([request])[0], reference.recommend([request])[0]
  assert got.unknown_items == () and got.items.tolist() == want.items.tolist()
  np.testing.assert_allclose(got.outcome_probabilities, want.outcome_probabilities, atol=1e-5)

  # Running it again adds nothing; items past the tables' room grow them and export again.
  assert add_items(directory, content_path, side_path) == second
  many = [1000 + i for i in range(12)]
  many_side = _write_side(tmp_path / "many.csv", many, ["b"] * 12, [years[0]] * 12, ["3"] * 12)
  third = add_items(directory, "", many_side)
  assert sorted(os.listdir(directory)) == sorted(
    [versions.CURRENT, os.path.basename(second), os.path.basename(third)]
  )
  grown_model, grown = _serving(third)
  assert grown.manifest.revision == 2 and grown_model.model.config.item_table_rows == 2 * MULTIPLE
  assert grown.manifest.files[fmt.ENCODER_FILE] != new.manifest.files[fmt.ENCODER_FILE]
  model, params = grown_model.model, grown_model.params
  want = np.asarray(model.apply({"params": params}, method=model.item_vectors))
  np.testing.assert_allclose(grown.recommender.index.item_vectors, want, atol=1e-5)
  jitted = Recommender(grown_model, grown.recommender.index, SERVING, None, grown.vocabulary)
  got, want = grown.recommender.recommend([request])[0], jitted.recommend([request])[0]
  np.testing.assert_allclose(got.outcome_probabilities, want.outcome_probabilities, atol=1e-5)


_SPEC = FeatureSpec(
  content_dim=C,
  categorical=(CategoricalColumn("genres", True, GENRES, 2),),
  numeric=(NumericColumn("price", 10.0, 2.0),),
)


def test_new_items_are_read_with_the_training_vocabularies_and_statistics(tmp_path):
  side = _write_side(
    tmp_path / "side.csv", [IDS[0], 8, 6], ["a", "d|zzz|b|c", ""], [""] * 3, ["1", "", "14"]
  )
  content = _write_content(tmp_path / "content.csv", [6], [[1.0, 2.0, 3.0, 4.0]])
  ids, features = read_new_items(_SPEC, ItemVocabulary(IDS), content, side)
  assert ids.tolist() == [6, 8]  # IDS[0] is known: skipped
  # An unseen value is no value; a row keeps the trained width's lowest value ids.
  np.testing.assert_array_equal(features.categorical[0].values, [[0, 0], [0, 0], [2, 3]])
  np.testing.assert_allclose(features.numeric[:, 0], [0.0, 2.0, 0.0])  # (14 - 10) / 2; missing 0
  np.testing.assert_allclose(features.content, [[0.0] * C, [1, 2, 3, 4], [0.0] * C])


def test_bad_rows_name_file_line_and_field(tmp_path):
  vocabulary = ItemVocabulary(IDS)
  side = tmp_path / "bad.csv"
  side.write_text("id,genres,year,price\n501,a,1990,3\n502,b,1995,cheap\n")
  with pytest.raises(DataFormatError, match=f"{side}:3: field 'price': expected a finite number"):
    read_new_items(_SPEC, vocabulary, "", side)
  side.write_text("id,genres\n501,a\n")
  with pytest.raises(DataFormatError, match=f"{side}:1: field 'price': the header lacks"):
    read_new_items(_SPEC, vocabulary, "", side)
  content = tmp_path / "wide.csv"
  content.write_text("501,1,2,3,4,5\n")
  with pytest.raises(DataFormatError, match=f"{content}: vectors of width 5; the model reads 4"):
    read_new_items(_SPEC, vocabulary, content)


def _table_bundle(directory: pathlib.Path) -> None:
  """A bundle of a model with an id table: its model.json and checksums (no computations)."""
  config = ModelConfig(num_items=3, num_outcomes=1, item_id_part="table", content_dim=2)

  def fill(folder: str) -> None:
    description = fmt.ModelDescription(config, SERVING, ("click",), ())
    spec = FeatureSpec(content_dim=2, categorical=(), numeric=())
    bundle_lib.write_model_files(folder, {}, description, ItemVocabulary([1, 2, 3]), spec)
    os.makedirs(os.path.join(folder, fmt.INDEX_DIR))
    for name in (store.INDEX_FILE, store.VECTORS_FILE, store.MANIFEST_FILE):
      pathlib.Path(folder, fmt.INDEX_DIR, name).write_bytes(b"")
    bundle_lib.write_manifest(folder, 0, "hash", (), ("cpu",), revision=0)

  versions.publish(str(directory), fill)


def test_a_model_with_an_id_table_is_refused_in_one_line(tmp_path):
  _table_bundle(tmp_path / "bundle")
  side = tmp_path / "new.csv"
  side.write_text("id,genres,year,price\n501,a,1990,3\n")
  done = subprocess.run(
    [sys.executable, "-m", "experiments.add_items", f"--bundle={tmp_path / 'bundle'}"]
    + [f"--item_side_path={side}"],
    capture_output=True,
    text=True,
    timeout=HANG_SECONDS,
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert done.returncode == 2, done.stderr[-2000:]
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and "item_id_part='table'" in lines[0], lines
  assert lines[0].startswith("error: ")
