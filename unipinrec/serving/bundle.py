"""A serving bundle loaded: its `Recommender`, item vocabulary and names, from its files only.

`Bundle.load` reads no training data, work directory or config file and never traces the
model's Python code: the `Recommender` runs the bundle's exported computations
(`export/computations.py`). Every file is checked against the bundle's manifest first
(`export/bundle_format.py`); `python -m experiments.export` writes bundles.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import flax.serialization
import jax

from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.export import bundle_format as fmt
from unipinrec.export.computations import Computations
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.model.unified import UniPinRec
from unipinrec.serving.recommender import Recommender


def _read(path: str, name: str) -> bytes:
  with open(os.path.join(path, *name.split("/")), "rb") as f:
    return f.read()


@dataclasses.dataclass(frozen=True)
class Bundle:
  """A loaded bundle version."""

  path: str  # the version folder read
  manifest: fmt.BundleManifest
  description: fmt.ModelDescription
  vocabulary: ItemVocabulary  # internal item id <-> the data's own id
  recommender: Recommender

  @property
  def outcome_names(self) -> tuple[str, ...]:
    return self.description.outcome_names

  @property
  def surface_names(self) -> tuple[str, ...]:
    return self.description.surface_names

  @property
  def version(self) -> str:
    """The version folder's name: what a server names in every answer."""
    return os.path.basename(os.path.normpath(self.path))

  @classmethod
  def load(cls, path: str, batch_sizes: Sequence[int] | None = None) -> Bundle:
    """The bundle at `path` (a bundle directory: its current version; or a version folder).

    Args:
      path: what `python -m experiments.export --out` names, or one version in it.
      batch_sizes: users per call, each one the bundle was exported for; default: every
        exported one. The `Recommender` fills the largest first (`Recommender.recommend`).

    Raises:
      MissingPathError: `path` holds no bundle.
      BundleError: an unknown format version, a file missing or changed (named), or a batch
        size or platform the computations were not exported for.
    """
    version = fmt.version_path(path)
    manifest = fmt.verify(version)
    description = fmt.ModelDescription.from_json(_read(version, fmt.MODEL_FILE).decode())
    batch_sizes = tuple(sorted(set(batch_sizes or manifest.batch_sizes)))
    missing = [size for size in batch_sizes if size not in manifest.batch_sizes]
    if missing:
      raise fmt.BundleError(
        f"{version}: computations exported for {manifest.batch_sizes} users per call, "
        f"not {missing[0]}; export it again with --batch_sizes={missing[0]}"
      )
    platform = jax.export.default_export_platform()
    if platform not in manifest.platforms:
      raise fmt.BundleError(
        f"{version}: exported for {', '.join(manifest.platforms)}, not for this process's "
        f"{platform}; export it again with --platforms={platform}"
      )
    params = jax.device_put(flax.serialization.msgpack_restore(_read(version, fmt.PARAMS_FILE)))
    serving = ServingModel(
      UniPinRec(description.model),
      params,
      manifest.step,
      manifest.config_hash,
      description.outcome_names,
    )
    config = dataclasses.replace(description.serving, batch_size=max(batch_sizes))
    index = store.load_files(os.path.join(version, fmt.INDEX_DIR), view=config.view)
    computations = {
      size: Computations.deserialize(
        *(_read(version, name) for name in fmt.computation_files(size))
      )
      for size in batch_sizes
    }
    vocabulary = ItemVocabulary.load(os.path.join(version, fmt.VOCABULARY_FILE))
    return cls(
      path=version,
      manifest=manifest,
      description=description,
      vocabulary=vocabulary,
      recommender=Recommender(
        serving, index, config, computations, vocabulary, description.surface_names
      ),
    )
