"""A serving bundle's files, its manifest, and the checks a bundle passes before it is read.

BUNDLE_DIR/
  current -> v20250101-120000-1a2b3c4d       the version in use (`unipinrec/versions.py`)
  v20250101-120000-1a2b3c4d/
    manifest.json       format and version, step, config hash, revision (items added since the
                        export), when and from which commit, exported batch sizes and
                        platforms, sha256 and size of every file
    model.json          model config (with the data's sizes), serving config, outcome and
                        surface names
    params.msgpack      the serving parameters (flax msgpack), no optimizer state
    vocabulary.json     internal item id <-> the data's own id (`ItemVocabulary`)
    index/              the usearch index, item_vectors.npy and the index manifest
    features.json       the item features the model reads (`data/feature_spec.py`), with their
                        training vocabularies and statistics; only where it reads features
    computations/       retrieve_b{B}.bin and rank_b{B}.bin: `jax.export` serialized StableHLO;
                        encode_items.bin where items can be added (`can_add_items`)

Format version 2 added features.json, encode_items.bin and the revision; version 1 bundles are
refused (export them again).

A reader that does not know the format version, or a file whose checksum or size differs
from the manifest's, is refused with a `BundleError` naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from unipinrec import versions
from unipinrec.config import ServingConfig
from unipinrec.errors import MissingPathError, UserInputError
from unipinrec.index.store import INDEX_FILE, VECTORS_FILE
from unipinrec.index.store import MANIFEST_FILE as INDEX_MANIFEST_FILE
from unipinrec.model.config import ModelConfig

FORMAT = "unipinrec.serving_bundle"
FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.json"
PARAMS_FILE = "params.msgpack"
VOCABULARY_FILE = "vocabulary.json"
FEATURES_FILE = "features.json"
INDEX_DIR = "index"
COMPUTATIONS_DIR = "computations"
ENCODER_FILE = f"{COMPUTATIONS_DIR}/encode_items.bin"
_CHUNK = 1 << 20  # bytes hashed per read


class BundleError(UserInputError, ValueError):
  """A bundle that cannot be served: unknown format version, a changed or missing file."""


def can_add_items(config: ModelConfig) -> bool:
  """Whether items can be added to the model's bundle: its items' vectors come from features,
  and their id part is not an id table (which has no row for an item it never trained on)."""
  return config.has_item_features and config.item_id_part != "table"


def computation_files(batch_size: int) -> tuple[str, str]:
  """The bundle paths of the exported retrieve and rank functions for `batch_size` users."""
  return (
    f"{COMPUTATIONS_DIR}/retrieve_b{batch_size}.bin",
    f"{COMPUTATIONS_DIR}/rank_b{batch_size}.bin",
  )


@dataclasses.dataclass(frozen=True)
class ModelDescription:
  """model.json: what builds the model and its `Recommender`, and what its indices mean."""

  model: ModelConfig  # with the data's catalogue, outcome and surface counts
  serving: ServingConfig  # its batch_size is the one a loaded bundle serves by default
  outcome_names: tuple[str, ...]
  surface_names: tuple[str, ...]  # empty where the data do not name their surfaces

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str) -> ModelDescription:
    values = json.loads(text)
    return cls(
      model=ModelConfig(**values["model"]),
      serving=ServingConfig(**values["serving"]),
      outcome_names=tuple(values["outcome_names"]),
      surface_names=tuple(values["surface_names"]),
    )


@dataclasses.dataclass(frozen=True)
class FileEntry:
  """What a bundle file must hash to."""

  sha256: str
  bytes: int


@dataclasses.dataclass(frozen=True)
class BundleManifest:
  """A bundle version's identity and the checksum of every other file in it."""

  step: int  # training step of the parameters
  config_hash: str  # `export.checkpoint.config_hash` of the run's configuration
  created: str  # UTC, ISO 8601
  git_commit: str  # the checkout that exported it
  batch_sizes: tuple[int, ...]  # users per call of the exported computations
  platforms: tuple[str, ...]  # where the exported computations run
  revision: int  # 0 as exported; each addition of items (`export/add_items.py`) adds 1
  files: dict[str, FileEntry]  # path relative to the version ("/"-separated) -> its entry
  format: str = FORMAT
  format_version: int = FORMAT_VERSION

  def to_json(self) -> str:
    values = dataclasses.asdict(self)
    first = {name: values.pop(name) for name in ("format", "format_version")}  # read first
    return json.dumps({**first, **values}, indent=2)

  @classmethod
  def read(cls, path: str) -> BundleManifest:
    """The manifest of the bundle version at `path`, checked for its format and version.

    Raises:
      BundleError: the manifest is missing, not one, or of another format version.
    """
    where = os.path.join(path, MANIFEST_FILE)
    try:
      with open(where, "rb") as f:
        values = json.loads(f.read())
    except FileNotFoundError:
      raise BundleError(f"{where}: missing; {path} is not a serving bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise BundleError(f"{where}: not a bundle manifest ({error})") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
      raise BundleError(f"{where}: not a bundle manifest (format is not {FORMAT!r})")
    if values.get("format_version") != FORMAT_VERSION:
      raise BundleError(
        f"{where}: bundle format version {values.get('format_version')!r}, this code reads "
        f"version {FORMAT_VERSION}; export the bundle again with this code"
      )
    try:
      values["files"] = {name: FileEntry(**entry) for name, entry in values["files"].items()}
      values["batch_sizes"] = tuple(values["batch_sizes"])
      values["platforms"] = tuple(values["platforms"])
      return cls(**values)
    except (KeyError, TypeError, AttributeError) as error:
      raise BundleError(f"{where}: malformed bundle manifest ({error!r})") from None


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def file_entries(path: str) -> dict[str, FileEntry]:
  """The entry of every regular file under `path` but the manifest, by relative path."""
  entries = {}
  for root, _, names in os.walk(path):
    for name in names:
      file = os.path.join(root, name)
      relative = os.path.relpath(file, path).replace(os.sep, "/")
      if relative != MANIFEST_FILE and not os.path.islink(file):
        entries[relative] = FileEntry(_sha256(file), os.path.getsize(file))
  return dict(sorted(entries.items()))


def version_path(path: str) -> str:
  """The bundle version `path` names: a version folder itself, else `path`'s current one.

  Raises:
    MissingPathError: `path` is neither.
  """
  if os.path.isfile(os.path.join(path, MANIFEST_FILE)):
    return path
  current = versions.current(path)
  if current is None:
    raise MissingPathError(
      f"{path}: no serving bundle (no {MANIFEST_FILE}, no '{versions.CURRENT}' version)"
    )
  return current


def verify(path: str) -> BundleManifest:
  """The manifest of the bundle version at `path`, once every file it lists matches it.

  Raises:
    BundleError: naming the first file that a reader needs and the manifest does not list, or
      that is missing or whose size or sha256 differs from the manifest's (or the manifest,
      for an unknown format version).
  """
  manifest = BundleManifest.read(path)
  for name in _required(manifest):
    if name not in manifest.files:
      raise BundleError(f"{os.path.join(path, *name.split('/'))}: not in the bundle manifest")
  for name, entry in manifest.files.items():
    file = os.path.join(path, *name.split("/"))
    if not os.path.isfile(file):
      raise BundleError(f"{file}: missing from the bundle")
    if os.path.getsize(file) != entry.bytes or _sha256(file) != entry.sha256:
      raise BundleError(f"{file}: checksum mismatch; the file was changed or damaged")
  return manifest


def _required(manifest: BundleManifest) -> list[str]:
  """Every file a reader of the bundle opens."""
  index = [f"{INDEX_DIR}/{name}" for name in (INDEX_FILE, VECTORS_FILE, INDEX_MANIFEST_FILE)]
  exported = [name for size in manifest.batch_sizes for name in computation_files(size)]
  return [MODEL_FILE, PARAMS_FILE, VOCABULARY_FILE, *index, *exported]
