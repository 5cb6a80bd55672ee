"""Writes a serving bundle (layout: `bundle_format.py`): what a server needs, nothing of training.

The parameters are written with flax's msgpack rather than orbax: the serving parameters are
one small-to-medium tree read whole by one host, so one file (one checksum, read in one call,
no optimizer state, no sharding metadata, no orbax at serving time) fits better than a
checkpoint directory. Each export is a new version made current atomically
(`unipinrec/versions.py`): a crash mid-export leaves the previous bundle whole and current.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import flax.core
import flax.serialization
import jax
from absl import logging

from unipinrec import records, versions
from unipinrec.config import RunConfig, ServingConfig
from unipinrec.data.feature_spec import FeatureSpec
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.errors import ConfigError
from unipinrec.export import bundle_format as fmt
from unipinrec.export import computations
from unipinrec.export.checkpoint import restore_serving_model
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.index.manifest import IndexConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train.experiment import read_run_config

# A bundle exported on a CPU host also serves on NVIDIA GPUs: lowering needs no such device.
DEFAULT_PLATFORMS = ("cpu", "cuda")


def server_batch_sizes(batch_size: int) -> tuple[int, ...]:
  """The powers of two below `batch_size`, and it: a server's micro-batch of any size up to
  `batch_size` users then runs as calls that it fills exactly (`Recommender.recommend`)."""
  return tuple(2**p for p in range(batch_size.bit_length()) if 2**p < batch_size) + (batch_size,)


def write_model_files(
  folder: str,
  params: Any,
  description: fmt.ModelDescription,
  vocabulary: ItemVocabulary,
  feature_spec: FeatureSpec | None,
) -> None:
  """Writes a version's parameters (plain arrays), model.json, vocabulary and features."""
  with open(os.path.join(folder, fmt.PARAMS_FILE), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(params))
  with open(os.path.join(folder, fmt.MODEL_FILE), "w") as f:
    f.write(description.to_json())
  vocabulary.save(os.path.join(folder, fmt.VOCABULARY_FILE))
  if feature_spec is not None:
    with open(os.path.join(folder, fmt.FEATURES_FILE), "w") as f:
      f.write(feature_spec.to_json())


def write_computations(
  folder: str,
  model: UniPinRec,
  params: Any,
  batch_sizes: Sequence[int],
  num_candidates: int,
  platforms: Sequence[str],
) -> None:
  """Exports retrieve and rank for each batch size, and the item encoder where items can be
  added (`bundle_format.can_add_items`), into the version `folder`."""
  os.makedirs(os.path.join(folder, fmt.COMPUTATIONS_DIR))
  blobs = {}
  for size in batch_sizes:
    logging.info("exporting retrieve and rank for %d users per call on %s", size, platforms)
    exported = computations.export(model, params, size, num_candidates, platforms)
    blobs.update(zip(fmt.computation_files(size), exported, strict=True))
  if fmt.can_add_items(model.config):
    blobs[fmt.ENCODER_FILE] = computations.export_item_encoder(model, params, platforms)
  for name, blob in blobs.items():
    with open(os.path.join(folder, *name.split("/")), "wb") as f:
      f.write(blob)


def write_manifest(
  folder: str,
  step: int,
  config_hash: str,
  batch_sizes: Sequence[int],
  platforms: Sequence[str],
  revision: int,
) -> None:
  """Writes the version's manifest, with the checksum of every file already in `folder`."""
  manifest = fmt.BundleManifest(
    step=step,
    config_hash=config_hash,
    created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    git_commit=records.git_commit(),
    batch_sizes=tuple(batch_sizes),
    platforms=tuple(platforms),
    revision=revision,
    files=fmt.file_entries(folder),
  )
  with open(os.path.join(folder, fmt.MANIFEST_FILE), "w") as f:
    f.write(manifest.to_json())


def write_bundle(
  directory: str,
  serving: ServingModel,
  vocabulary: ItemVocabulary,
  surface_names: Sequence[str],
  serving_config: ServingConfig,
  index_config: IndexConfig,
  batch_sizes: Sequence[int] = (),
  platforms: Sequence[str] = DEFAULT_PLATFORMS,
  feature_spec: FeatureSpec | None = None,
) -> str:
  """Writes a new version of the bundle in `directory` and makes it current, atomically.

  Args:
    directory: the bundle directory (created if absent).
    serving: the model and parameters to serve.
    vocabulary: the original id of each of the model's items.
    surface_names: what each surface index stands for (empty where unnamed).
    serving_config: candidates, results and batch size of the bundle's `Recommender`.
    index_config: how the usearch index is built.
    batch_sizes: users per call to export the computations for, besides
      `server_batch_sizes(serving_config.batch_size)` (always exported).
    platforms: where the exported computations may run.
    feature_spec: the item features the model was trained on; a model with features needs it
      (items are added with it, `export/add_items.py`), one without has none.

  Returns:
    The path of the new version.
  """
  config = serving.model.config
  if len(vocabulary) != config.num_items:
    raise ValueError(f"a vocabulary of {len(vocabulary)} items for a model of {config.num_items}")
  if config.has_item_features != (feature_spec is not None):
    raise ValueError("a model with item features needs their FeatureSpec, one without none")
  sizes = tuple(sorted({*server_batch_sizes(serving_config.batch_size), *batch_sizes}))
  num_candidates = serving_config.candidates_for(config.num_items)
  params = jax.device_get(flax.core.meta.unbox(serving.params))  # plain arrays, no metadata
  description = fmt.ModelDescription(
    config, serving_config, serving.outcome_names, tuple(surface_names)
  )

  def fill(folder: str) -> None:
    write_model_files(folder, params, description, vocabulary, feature_spec)
    logging.info("indexing %d items", config.num_items)
    os.makedirs(os.path.join(folder, fmt.INDEX_DIR))
    store.save(
      os.path.join(folder, fmt.INDEX_DIR), serving.manifest(index_config), serving.item_vectors()
    )
    write_computations(folder, serving.model, params, sizes, num_candidates, platforms)
    write_manifest(folder, serving.step, serving.config_hash, sizes, platforms, revision=0)

  return versions.publish(directory, fill)


def export_workdir(
  workdir: str,
  directory: str,
  batch_sizes: Sequence[int] = (),
  platforms: Sequence[str] = DEFAULT_PLATFORMS,
  run: RunConfig | None = None,
) -> str:
  """The bundle of `workdir`'s served step (`restore_serving_model`), written by `write_bundle`.

  Reads the training data once, for the item vocabulary and the surface names.

  Returns:
    The path of the new version.
  """
  run = run or read_run_config(workdir)
  if run.data.synthetic.items_from_ids and run.data.source == "synthetic":
    # A bundle holds every item's vector and index entry: 10^8 of them need a chunked build.
    raise ConfigError(
      "data.synthetic.items_from_ids: a catalogue computed from ids is evaluated, not exported"
    )
  serving, experiment = restore_serving_model(workdir, run)
  features = experiment.data.item_features
  logging.info("serving step %d of %s", serving.step, workdir)
  return write_bundle(
    directory,
    serving,
    experiment.data.item_vocabulary,
    experiment.data.logs.surface_names,
    run.serving,
    run.index,
    batch_sizes,
    platforms,
    None if features is None else FeatureSpec.of(features),
  )
