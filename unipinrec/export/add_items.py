"""Adds items that only feature files know to a serving bundle: no training, no index rebuild.

For the ids of the files that the bundle's vocabulary lacks, `add_items` reads their features as
training read them (`data/feature_spec.py`: the training vocabularies and statistics, which the
bundle carries), encodes them with the bundle's exported item encoder, `add`s their vectors to
the usearch index as items N+1..N+M (in ascending order of their ids) and writes them into the
parameters' frozen feature tables, so that retrieval, histories and ranking all read them. The
result is a new bundle version, made current atomically (`unipinrec/versions.py`): a crash
leaves the previous version current, and the previous version stays on disk until the next
write. A new item's learned item bias is 0.

The retrieve and rank computations are copied as they are while the tables' padded rows hold the
new items and the candidate count stays; otherwise the tables grow to the next multiple of
`model.item_table_multiple` and they are exported again from this checkout's model code.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import flax.serialization
import jax
import numpy as np
from absl import logging

from unipinrec import versions
from unipinrec.data.feature_spec import FeatureSpec, read_new_items
from unipinrec.data.tables import PathLike
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.errors import MissingPathError, UserInputError
from unipinrec.export import bundle as bundle_lib
from unipinrec.export import bundle_format as fmt
from unipinrec.index import store
from unipinrec.model.config import ModelConfig
from unipinrec.model.item_encoder import FROZEN_PREFIX, feature_tables
from unipinrec.model.unified import UniPinRec


class AddItemsError(UserInputError, ValueError):
  """A bundle whose model cannot give an item it never trained on a vector."""


def _read(version: str, name: str) -> bytes:
  with open(os.path.join(version, *name.split("/")), "rb") as f:
    return f.read()


def _with_new_rows(params: Any, tables: dict[str, np.ndarray], first: int, rows: int) -> Any:
  """`params` with `tables`' rows written from row `first` on, the item bias 0 there, and every
  table of one row per item `rows` long (the rows past the catalogue zero)."""
  tokenizer = dict(params["tokenizer"])
  for name in [*tables, *(["item_bias"] if "item_bias" in tokenizer else [])]:
    old = np.asarray(tokenizer[name])
    grown = np.zeros((rows,) + old.shape[1:], old.dtype)
    grown[:first] = old[:first]
    if name in tables:
      grown[first : first + len(tables[name])] = tables[name]
    tokenizer[name] = grown
  return {**params, "tokenizer": tokenizer}


def _check_can_add(version: str, manifest: fmt.BundleManifest, config: ModelConfig) -> None:
  """Raises `AddItemsError` where the bundle's model cannot encode an item it never trained on."""
  if config.item_id_part == "table":
    raise AddItemsError(
      f"{version}: the model's id part is an id table (item_id_part='table'), which has no row "
      "for an item it never trained on; items can be added to models with item_id_part "
      "'hashed' or 'none'"
    )
  if not fmt.can_add_items(config) or fmt.ENCODER_FILE not in manifest.files:
    raise AddItemsError(f"{version}: the model reads no item features to encode new items from")


def add_items(directory: str, content_path: PathLike = "", side_path: PathLike = "") -> str:
  """Adds the feature files' items that the bundle in `directory` lacks, as a new version.

  Args:
    directory: a bundle directory (`python -m experiments.export --out`).
    content_path, side_path: feature files ("" for none) in the layouts of
      `data/item_feature_files.py`, with the columns the model was trained on.

  Returns:
    The path of the new current version; the current one's when every id is already in it.

  Raises:
    MissingPathError: `directory` holds no bundle.
    BundleError: the bundle fails its checks.
    AddItemsError: the model cannot encode new items (an id table, or no features).
    DataFormatError: a bad row, naming file, line and field.
  """
  version = versions.current(directory)
  if version is None:
    raise MissingPathError(f"{directory}: no serving bundle (no '{versions.CURRENT}' version)")
  manifest = fmt.verify(version)
  description = fmt.ModelDescription.from_json(_read(version, fmt.MODEL_FILE).decode())
  config = description.model
  _check_can_add(version, manifest, config)
  spec = FeatureSpec.from_json(_read(version, fmt.FEATURES_FILE).decode())
  vocabulary = ItemVocabulary.load(os.path.join(version, fmt.VOCABULARY_FILE))
  ids, features = read_new_items(spec, vocabulary, content_path, side_path)
  if not len(ids):
    logging.info("every item of the feature files is in %s already: nothing to add", version)
    return version
  num_items, count = config.num_items, len(ids)
  params = flax.serialization.msgpack_restore(_read(version, fmt.PARAMS_FILE))
  tables = {  # in the frozen tables' dtype: value ids as float32, as `ItemEncoder` keeps them
    name: table[1:].astype(params["tokenizer"][name].dtype)
    for name, table in feature_tables(features).items()
  }
  rows = {name.removeprefix(f"{FROZEN_PREFIX}_"): table for name, table in tables.items()}
  encode = jax.export.deserialize(bytearray(_read(version, fmt.ENCODER_FILE))).call
  new_ids = np.arange(num_items + 1, num_items + count + 1, dtype=np.int32)
  vectors = np.asarray(encode(params, new_ids, rows), np.float32)
  logging.info("encoded %d new items (internal ids %d..)", count, num_items + 1)

  grown = dataclasses.replace(config, num_items=num_items + count)
  params = _with_new_rows(params, tables, num_items + 1, grown.item_table_rows)
  num_candidates = description.serving.candidates_for(grown.num_items)
  export_again = (grown.item_table_rows, num_candidates) != (
    config.item_table_rows,
    description.serving.candidates_for(num_items),
  )
  extended = ItemVocabulary(
    np.concatenate([vocabulary.to_original(np.arange(1, num_items + 1)), ids])
  )

  def fill(folder: str) -> None:
    bundle_lib.write_model_files(
      folder, params, dataclasses.replace(description, model=grown), extended, spec
    )
    os.makedirs(os.path.join(folder, fmt.INDEX_DIR))
    store.extend(os.path.join(version, fmt.INDEX_DIR), os.path.join(folder, fmt.INDEX_DIR), vectors)
    if export_again:
      logging.info(
        "the tables grow to %d rows: exporting the computations again", grown.item_table_rows
      )
      bundle_lib.write_computations(
        folder, UniPinRec(grown), params, manifest.batch_sizes, num_candidates, manifest.platforms
      )
    else:
      shutil.copytree(
        os.path.join(version, fmt.COMPUTATIONS_DIR), os.path.join(folder, fmt.COMPUTATIONS_DIR)
      )
    bundle_lib.write_manifest(
      folder,
      manifest.step,
      manifest.config_hash,
      manifest.batch_sizes,
      manifest.platforms,
      manifest.revision + 1,
    )

  return versions.publish(directory, fill, keep_previous=True)
