"""Interaction files -> one TFDS example per user, stored as ArrayRecord.

`UserSequences` is a TensorFlow Datasets builder that reads an interaction
file (or folder) from the manual directory with
`unipinrec.data.readers.read_interactions` and writes one example per user,
sorted by timestamp with ties in file order (a stable sort, PROTOCOL.md),
duplicates kept, original user ids kept, item ids remapped to 1..N by the data
set's `ItemVocabulary`, stored beside the examples. Nothing is downloaded and
TensorFlow is never imported: examples are serialized with TFDS's own
`tf.train.Example` protos (each sequence one raw-bytes feature) and read back from the
ArrayRecord shards with NumPy.

On disk (`data_dir` of `prepare_user_sequences`):

  user_sequences/<stem>-<format>-<fingerprint>/2.0.0/
    user_sequences-train.array_record-00000-of-00001
    item_vocabulary.json  (`ItemVocabulary.save`: the original id of each item 1..N)
    dataset_info.json, features.json, metadata.json (outcome and surface names)
  downloads/  (tfds's download folder, left empty)

Users are stored in ascending original id, each example's features in name
order (`CanonicalExampleWriter`), so equal data give equal bytes. With a Beam
runner configured, `unipinrec.data.beam_sequences` makes the same records. The config name carries a
fingerprint of the source (path, size, mtime of every file, reader
arguments), so a changed source gets a new config and a fresh build, while an
unchanged one is reused; the configs of older versions of a file stay on disk.
A builder version whose stored layout differs gets its own version folder, so a
cache written by an older version is rebuilt, not misread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import shuffle as tfds_shuffle
from tensorflow_datasets.core import writer as writer_lib
from tensorflow_datasets.proto import tf_example_pb2

from unipinrec.data.readers import read_interactions
from unipinrec.data.sequences import UserSequences as ProtocolSequences
from unipinrec.data.sequences import sequences_from_records, user_records
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.errors import MissingPathError

SPLIT = "train"
VOCABULARY_FILE = "item_vocabulary.json"
# Each example's per-interaction arrays, stored as raw bytes (`UserSequences._info`).
_SEQUENCE_DTYPES = {
  "items": np.int32,
  "timestamps": np.int64,
  "outcomes": np.int32,
  "surfaces": np.int32,
  "lines": np.int64,
}
_RAW_BYTES = tfds.decode.DeserializeMethod.RAW_BYTES
_READ_CHUNK = 4096  # examples read from the shards at a time


class CanonicalExampleWriter(writer_lib.ExampleWriter):
  """Writes each example with its features in name order, so equal data give equal bytes.

  TFDS serializes an example's features in the order of protobuf's hash map, whose seed
  changes from process to process: without this, every build of the same data (local or
  Beam) writes other bytes.
  """

  def write(
    self, path: epath.PathLike, examples: Iterable[tuple[Any, bytes]]
  ) -> tfds.core.file_adapters.ExamplePositions | None:
    canonical = (
      (key, tf_example_pb2.Example.FromString(example).SerializeToString(deterministic=True))
      for key, example in examples
    )
    return super().write(path, canonical)


@dataclasses.dataclass(eq=False)
class UserSequencesConfig(tfds.core.BuilderConfig):
  """Which reader to use on what: one config per source (and its fingerprint).

  `source_name` is the file inside the manual directory, or "" when the
  manual directory itself is the source (a folder such as ml-100k's).
  `reader_kwargs` is a sorted tuple of (name, value) pairs, so that the
  config's repr (which tfds logs) does not depend on the call's order.
  """

  format: str = "auto"  # a `read_interactions` format: auto, movielens, sasrec, actions
  source_name: str = ""
  reader_kwargs: tuple[tuple[str, Any], ...] = ()


class UserSequences(tfds.core.GeneratorBasedBuilder):
  """One example per user: the user's interactions in time order."""

  VERSION = tfds.core.Version("3.0.0")
  RELEASE_NOTES = {
    "1.0.0": "One example per user: user, items, timestamps, outcomes, lines; stable time sort.",
    "2.0.0": "Items as ids 1..N of item_vocabulary.json (integer or string original ids); "
    "surface names in the metadata.",
    "3.0.0": "Sequences stored as raw bytes (tfds Encoding.BYTES), not lists of integers.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Pass the folder holding the interaction file as `manual_dir` in "
    "`tfds.download.DownloadConfig`, and the file's name as the config's "
    "`source_name` (empty when the folder itself is the source). Nothing is "
    "downloaded; `prepare_user_sequences` does this for you."
  )

  # tfds 4.9.10 imports `importlib_resources` to locate a packaged builder's file but declares
  # it only for Python < 3.9, so the lookup fails here; this is the path its fallback gives.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, *, file_format: str = "array_record", **kwargs: Any):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    # Raw bytes: TFDS writes and reads an int list element by element in Python, which
    # dominates preparing a large log; bytes are one copy each way, and need no TensorFlow.
    def sequence(name: str) -> tfds.features.Tensor:
      encoding = tfds.features.Encoding.BYTES
      return tfds.features.Tensor(shape=(None,), dtype=_SEQUENCE_DTYPES[name], encoding=encoding)

    return tfds.core.DatasetInfo(
      builder=self,
      description="Per-user interactions in time order (ties in file order); item ids 1..N.",
      features=tfds.features.FeaturesDict(
        {
          "user": tfds.features.Scalar(dtype=np.int64),
          "items": sequence("items"),
          "timestamps": sequence("timestamps"),
          "outcomes": sequence("outcomes"),
          "surfaces": sequence("surfaces"),
          "lines": sequence("lines"),
        }
      ),
      # Users are written in ascending id order, so record i is the same user on every build.
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(),
    )

  def _example_writer(self) -> writer_lib.ExampleWriter:
    return CanonicalExampleWriter(file_format=self.info.file_format)

  def _download_and_prepare(
    self,
    dl_manager: tfds.download.DownloadManager,
    download_config: tfds.download.DownloadConfig,
  ) -> None:
    # TFDS gives the split generators no sight of the download config, so note the choice here.
    self._on_beam = (
      download_config.beam_runner is not None or download_config.beam_options is not None
    )
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    source = pathlib.Path(dl_manager.manual_dir) / self.builder_config.source_name
    if self._on_beam:
      from unipinrec.data import beam_sequences  # apache-beam is an optional extra

      config = self.builder_config
      records = beam_sequences.UserRecords(
        os.fspath(source),
        config.format,
        dict(config.reader_kwargs),
        vocabulary_path=os.fspath(self.data_path / VOCABULARY_FILE),
        names_path=os.fspath(self.data_path / beam_sequences.NAMES_FILE),
      )
      return {SPLIT: records}
    return {SPLIT: self._generate_examples(source)}

  def _process_pipeline_result(self, pipeline_result: Any) -> None:
    """Moves the names the Beam pipeline wrote into the metadata (written after this)."""
    from unipinrec.data import beam_sequences

    self.info.metadata.update(beam_sequences.pop_names(self.data_path / beam_sequences.NAMES_FILE))

  def _generate_examples(self, source: pathlib.Path) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    config = self.builder_config
    interactions = read_interactions(
      str(source), format=config.format, **dict(config.reader_kwargs)
    )
    vocabulary = ItemVocabulary.from_items(interactions.items)
    # Known only once the source is read; tfds writes the metadata with the data set, and
    # `data_path` is the build's temporary folder, renamed into place once everything is written.
    self.info.metadata["outcome_names"] = list(interactions.outcome_names)
    self.info.metadata["surface_names"] = list(interactions.surface_names)
    vocabulary.save(self.data_path / VOCABULARY_FILE)
    records = user_records(interactions, vocabulary)
    del interactions  # a log of real size: the records' sorted copies are all it needs
    for record in records:
      yield int(record["user"]), record


def _user_record(serialized: bytes) -> dict[str, np.ndarray | int]:
  """One stored example as `user_records` yielded it.

  TFDS's generic decoding spends far longer per example than copying its arrays, and a log
  of real size has hundreds of thousands of users.
  """
  features = tf_example_pb2.Example.FromString(serialized).features.feature
  record: dict[str, np.ndarray | int] = {"user": features["user"].int64_list.value[0]}
  for name, dtype in _SEQUENCE_DTYPES.items():
    record[name] = np.frombuffer(features[name].bytes_list.value[0], dtype)
  return record


def source_fingerprint(
  source_path: str | os.PathLike, format: str, reader_kwargs: Mapping[str, Any]
) -> str:
  """A short hash of the source's path, its files' sizes and mtimes, and the reader's arguments."""
  source = pathlib.Path(source_path).resolve()
  files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
  digest = hashlib.sha256(f"{source}\n{format}\n{sorted(reader_kwargs.items())!r}\n".encode())
  for path in files:
    stat = path.stat()
    name = path.relative_to(source) if source.is_dir() else path.name
    digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:16]


def user_sequences_builder(
  source_path: str | os.PathLike,
  data_dir: str | os.PathLike,
  format: str = "auto",
  **reader_kwargs: Any,
) -> UserSequences:
  """The builder for `source_path` (a file, or a folder such as ml-100k's), not yet prepared."""
  source = pathlib.Path(source_path).resolve()
  if not source.exists():
    raise MissingPathError(f"no interaction file or folder at {source}")
  stem = re.sub(r"[^\w.\-]", "_", source.stem if source.is_file() else source.name)
  fingerprint = source_fingerprint(source, format, reader_kwargs)
  config = UserSequencesConfig(
    name=f"{stem}-{format}-{fingerprint}",
    description=f"User sequences of {source} read as {format!r}.",
    format=format,
    source_name=source.name if source.is_file() else "",
    reader_kwargs=tuple(sorted(reader_kwargs.items())),
  )
  return UserSequences(data_dir=os.fspath(data_dir), config=config)


@contextlib.contextmanager
def _examples_kept_in_memory() -> Iterator[None]:
  """TFDS's writer keeps a split's examples in memory, not spilling them past 1 GB.

  Its spill files go through `tf.io.gfile`, so a log over 1 GB of examples would need
  TensorFlow, which this project never installs; the examples, raw bytes, are about the size
  of the arrays they hold, which the build holds anyway.
  """
  limit = tfds_shuffle.MAX_MEM_BUFFER_SIZE
  tfds_shuffle.MAX_MEM_BUFFER_SIZE = sys.maxsize
  try:
    yield
  finally:
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = limit


def prepare_user_sequences(
  source_path: str | os.PathLike,
  data_dir: str | os.PathLike,
  format: str = "auto",
  *,
  beam_runner: str | None = None,
  beam_options: Sequence[str] | None = None,
  **reader_kwargs: Any,
) -> Sequence[dict[str, np.ndarray]]:
  """Builds the per-user data set of `source_path` unless already built, and returns it.

  The result is a random-access source (`len`, `[i]`) of dicts with `user`,
  `items` (ids 1..N of the data set's `VOCABULARY_FILE`), `timestamps`,
  `outcomes`, `surfaces` and `lines`, record i being the i-th user in
  ascending original id. A source whose path, size or mtime changed
  gets a new config, hence a fresh build.

  TFDS writes the whole version folder into a sibling `incomplete.*` folder
  and renames it into place only when every file is written, and treats the
  data set as built only when the version folder exists: a crash mid-build
  leaves at worst an `incomplete.*` folder, never a half data set that a
  later call would read.

  With `beam_runner` (a Beam runner's name, such as "DirectRunner") or `beam_options` (Beam's
  pipeline flags, such as `["--runner=FlinkRunner", "--flink_master=host:8081"]`), an Apache
  Beam pipeline builds the same records (`unipinrec.data.beam_sequences`; needs the `beam`
  extra); without them the build runs in this process.
  """
  builder = user_sequences_builder(source_path, data_dir, format, **reader_kwargs)
  source = pathlib.Path(source_path).resolve()
  manual_dir = source.parent if source.is_file() else source
  beam: dict[str, Any] = {}
  if beam_runner is not None or beam_options is not None:
    from unipinrec.data.beam_sequences import pipeline_options

    beam = dict(beam_runner=beam_runner, beam_options=pipeline_options(beam_options or ()))
  # No GCS copy either: the data come only from the manual directory.
  download_config = tfds.download.DownloadConfig(
    manual_dir=os.fspath(manual_dir), try_download_gcs=False, **beam
  )
  try:
    with _examples_kept_in_memory():
      builder.download_and_prepare(download_config=download_config)
  except OSError:
    # Another process renamed its finished copy into place first (the rename onto it failed).
    # This builder's info still names its deleted temporary folder, so read the copy afresh.
    builder = user_sequences_builder(source_path, data_dir, format, **reader_kwargs)
    if not builder.is_prepared():
      raise
  return builder.as_data_source(split=SPLIT)


def load_user_sequences(
  source_path: str | os.PathLike,
  data_dir: str | os.PathLike,
  format: str = "auto",
  *,
  beam_runner: str | None = None,
  beam_options: Sequence[str] | None = None,
  **reader_kwargs: Any,
) -> ProtocolSequences:
  """The protocol's sequences of `source_path`, built once into TFDS and read from its shards.

  The item vocabulary comes from the built data set, so it is the one a fresh read would give.
  A build runs on Beam as `prepare_user_sequences` says for `beam_runner` and `beam_options`.
  """
  prepare_user_sequences(
    source_path,
    data_dir,
    format,
    beam_runner=beam_runner,
    beam_options=beam_options,
    **reader_kwargs,
  )
  builder = user_sequences_builder(source_path, data_dir, format, **reader_kwargs)
  metadata = builder.info.metadata
  # Every process reads every user: each needs the whole catalogue and all evaluation rows;
  # the training pipeline shards the examples cut from them.
  serialized = builder.as_data_source(split=SPLIT, deserialize_method=_RAW_BYTES)
  chunks = (
    serialized.__getitems__(range(start, min(start + _READ_CHUNK, len(serialized))))
    for start in range(0, len(serialized), _READ_CHUNK)
  )
  return sequences_from_records(
    (_user_record(example) for chunk in chunks for example in chunk),
    os.fspath(source_path),
    ItemVocabulary.load(builder.data_path / VOCABULARY_FILE),
    metadata["outcome_names"],
    metadata["surface_names"],
  )
