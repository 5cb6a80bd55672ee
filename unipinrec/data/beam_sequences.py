"""The per-user examples of `tfds_builders.UserSequences`, made by an Apache Beam pipeline.

For logs that outgrow one machine, `UserRecords` is what the builder's split generator returns
when a Beam runner is configured (TFDS runs it and writes its output):

  source path -> read_interactions (in a worker) -> each user's rows, keyed by user id
    -> GroupByKey -> the user's rows in time order, ties in file order (`user_records`),
       items mapped through the vocabulary (a side input: the sorted distinct original ids)
    -> (user id, record)

TFDS writes the records in ascending key order (the builder disables shuffling), so the shards
hold the same serialized examples as the local build. Everything after the read is spread over
workers by user; the read itself is one worker per source file. The pipeline also writes the
item vocabulary and the outcome and surface names into the build folder, so the driver never
holds the log; `pop_names` gives the builder the names back once the pipeline has run.

Runners are chosen with Beam's own pipeline flags (BUILD.md, "Preparing a data set on Apache Beam").
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

try:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as error:
  raise ImportError(
    "preparing a data set on Apache Beam needs the 'apache-beam' package: pip install -e '.[beam]'"
  ) from error

from unipinrec.data.interactions import DataFormatError, Interactions
from unipinrec.data.readers import read_interactions
from unipinrec.data.sequences import user_records
from unipinrec.data.vocabulary import ItemVocabulary

# Written by the pipeline into the build folder; the builder moves the names into the metadata.
NAMES_FILE = "beam_names.json"

# The columns a record is made of: what `user_records` reads of an `Interactions`.
_ROW_COLUMNS = ("users", "items", "timestamps", "outcomes", "lines", "surfaces")


def pipeline_options(flags: Sequence[str]) -> PipelineOptions:
  """Beam's options from its command-line flags (`--runner=FlinkRunner --flink_master=...`)."""
  return PipelineOptions(list(flags))


def _read(source: str, format: str, reader_kwargs: Mapping[str, Any]) -> Interactions:
  interactions = read_interactions(source, format=format, **reader_kwargs)
  if len(interactions) == 0:
    raise DataFormatError(interactions.path, None, None, "no interactions")
  return interactions


def _rows(interactions: Interactions, rows: np.ndarray) -> Interactions:
  """The rows `rows` of `interactions` (in that order), with what `user_records` reads."""
  columns = {name: getattr(interactions, name) for name in _ROW_COLUMNS}
  return Interactions(
    path=interactions.path,
    outcome_names=interactions.outcome_names,
    surface_names=interactions.surface_names,
    **{name: None if values is None else values[rows] for name, values in columns.items()},
  )


def _user_pieces(interactions: Interactions) -> Iterator[tuple[int, tuple[int, Interactions]]]:
  """(user id, (first row, the user's rows in file order)) for each user of `interactions`."""
  order = np.argsort(interactions.users, kind="stable")
  users = interactions.users[order]
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
  for rows in np.split(order, starts[1:]):
    yield int(interactions.users[rows[0]]), (int(rows[0]), _rows(interactions, rows))


def _concatenate(pieces: Iterable[tuple[int, Interactions]]) -> Interactions:
  """One user's pieces joined in file order (GroupByKey gives them in any order)."""
  parts = [piece for _, piece in sorted(pieces, key=lambda first_and_piece: first_and_piece[0])]
  columns = {
    name: None
    if getattr(parts[0], name) is None
    else np.concatenate([getattr(part, name) for part in parts])
    for name in _ROW_COLUMNS
  }
  first = parts[0]
  return Interactions(
    path=first.path,
    outcome_names=first.outcome_names,
    surface_names=first.surface_names,
    **columns,
  )


def _record(
  user_and_pieces: tuple[int, Iterable[tuple[int, Interactions]]], vocabulary: ItemVocabulary
) -> tuple[int, dict[str, np.ndarray]]:
  """(user id, the user's record as `user_records` makes it)."""
  user, pieces = user_and_pieces
  (record,) = user_records(_concatenate(pieces), vocabulary)
  return user, record


def _distinct_items(item_sets: Iterable[np.ndarray]) -> np.ndarray:
  """The sorted distinct ids of several sorted distinct sets (associative, as Beam needs)."""
  return np.unique(np.concatenate(list(item_sets)))


def _save_names(interactions: Interactions, path: str) -> None:
  names = {
    "outcome_names": list(interactions.outcome_names),
    "surface_names": list(interactions.surface_names),
  }
  pathlib.Path(path).write_text(json.dumps(names))


def pop_names(path: str | os.PathLike) -> dict[str, list[str]]:
  """The outcome and surface names the pipeline wrote to `path`, removing the file."""
  path = pathlib.Path(path)
  names = json.loads(path.read_text())
  path.unlink()
  return names


class UserRecords(beam.PTransform):
  """(user id, record) per user of `source`, as `user_records` makes them.

  Writes the item vocabulary (`ItemVocabulary.save`) to `vocabulary_path` and the outcome and
  surface names to `names_path` (`pop_names` reads them back).
  """

  def __init__(
    self,
    source: str,
    format: str,
    reader_kwargs: Mapping[str, Any],
    vocabulary_path: str,
    names_path: str,
  ):
    super().__init__()
    self._source = source
    self._format = format
    self._reader_kwargs = dict(reader_kwargs)
    self._vocabulary_path = vocabulary_path
    self._names_path = names_path

  def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
    interactions = (
      pipeline
      | "Source" >> beam.Create([self._source])
      | "Read" >> beam.Map(_read, self._format, self._reader_kwargs)
    )
    vocabulary = (
      interactions
      | "ItemSets" >> beam.Map(lambda read: np.unique(read.items))
      | "DistinctItems" >> beam.CombineGlobally(_distinct_items)
      | "Vocabulary" >> beam.Map(ItemVocabulary)
    )
    _ = vocabulary | "SaveVocabulary" >> beam.Map(ItemVocabulary.save, self._vocabulary_path)
    _ = interactions | "SaveNames" >> beam.Map(_save_names, self._names_path)
    return (
      interactions
      | "UserPieces" >> beam.FlatMap(_user_pieces)
      | "ByUser" >> beam.GroupByKey()
      | "Records" >> beam.Map(_record, beam.pvalue.AsSingleton(vocabulary))
    )
