"""Batch recommendation: JSON lines of users in, JSON lines of ranked items out.

One input line per user:
  {"user": "u1", "items": [12, 7, 3], "outcomes": ["click", ["click", "save"], "click"],
   "times": [1700000000, 1700000060, 1700000400], "surfaces": ["home", "search", "home"],
   "request_time": 1700000500, "surface": "home", "condition": "any",
   "budgets": {"save": 3, "click": 1}}
Only "user" (a string or an integer) and "items" are required; no other field is
taken. Items are the data set's own ids: integers, or strings (e.g. ASINs,
["B00X4WHP5E", ...]) where the data spell them so; an id the data do not know is
dropped and listed in the answer's "unknown_items". An action's outcome is a name or a list of names
(default: the first, least valuable outcome); a surface is an integer or, where
the data name surfaces, a name. Times are seconds (finite, >= 0) and default to
one minute apart, surfaces to 0, the request time to the last action's, the
condition to "any" (else an outcome name: retrieve for that outcome); "budgets"
(outcome name -> weight) splits the candidates across outcomes instead.

One output line per non-blank input line, in input order, items in the data set's ids:
  {"user": "u1", "items": [...], "scores": [...], "retrieval_scores": [...],
   "probabilities": {"click": [...], "save": [...]}, "retrieved_for": ["any", ...],
   "cold_start": false, "unknown_items": []}
or, where the input line is not valid JSON or has a bad field, an error
record naming the line (numbered from 1, blank ones counted) and the field:
  {"line": 7, "error": "line 7: field 'items': expected a list of integers, got '12'"}
Every good line is answered; experiments/recommend.py then exits with status 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import reprlib
import types
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tqdm
from absl import logging

from unipinrec import records
from unipinrec.config import RunConfig
from unipinrec.data.vocabulary import ItemVocabulary
from unipinrec.errors import MissingPathError
from unipinrec.export.checkpoint import restore_serving_model
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.serving.recommender import Recommendation, Recommender, UserRequest
from unipinrec.train.experiment import read_run_config

INDEX_DIR = "index"  # under the work directory
REQUEST_FIELDS = (
  "user",
  "items",
  "outcomes",
  "times",
  "surfaces",
  "request_time",
  "surface",
  "condition",
  "budgets",
)


def parse_request(
  record: object,
  outcome_names: Sequence[str],
  vocabulary: ItemVocabulary | None = None,
  surface_names: Sequence[str] = (),
) -> UserRequest:
  """A `UserRequest` from one decoded input line.

  Args:
    record: the decoded line.
    outcome_names: the outcomes' names, least valuable first.
    vocabulary: the data set's item ids; items are integers without one.
    surface_names: the surfaces' names, where the data name them.

  Raises:
    ValueError: for a malformed line; the message names the field.
  """
  if not isinstance(record, dict):
    raise ValueError(f"expected a JSON object, got {reprlib.repr(record)}")
  for name in record:
    if name not in REQUEST_FIELDS:  # a misspelt optional field would be ignored silently
      raise ValueError(f"field {name!r}: unknown; a user line has {', '.join(REQUEST_FIELDS)}")
  user = record.get("user")
  if user is not None and not _is(user, str | int):
    raise ValueError(f"field 'user': expected a string or an integer, got {reprlib.repr(user)}")
  string_items = vocabulary is not None and not vocabulary.is_integer
  items = _array(record, "items", np.str_ if string_items else np.int64)
  for name, value in (("user", user), ("items", items)):
    if value is None:
      raise ValueError(f"field {name!r}: missing; a user line needs 'user' and 'items'")
  num_actions = len(items)
  times = _array(record, "times", np.float64, num_actions)
  if times is not None and not (np.isfinite(times).all() and (times >= 0).all()):
    raise ValueError(
      f"field 'times': expected finite seconds >= 0, got {reprlib.repr(record['times'])}"
    )
  surfaces = record.get("surfaces")
  if surfaces is not None:
    if not isinstance(surfaces, list):
      raise ValueError(f"field 'surfaces': expected a list, got {reprlib.repr(surfaces)}")
    if len(surfaces) != num_actions:
      raise ValueError(f"field 'surfaces': {len(surfaces)} surfaces for {num_actions} items")
    surfaces = np.asarray([_surface(s, "surfaces", surface_names) for s in surfaces], np.int64)
  actions = record.get("outcomes")
  if actions is None:
    actions = [outcome_names[0]] * num_actions
  elif not isinstance(actions, list) or not all(isinstance(a, str | list) for a in actions):
    raise ValueError(
      f"field 'outcomes': expected a list of outcome names or lists of them, "
      f"got {reprlib.repr(actions)}"
    )
  elif len(actions) != num_actions:
    raise ValueError(f"field 'outcomes': {len(actions)} outcomes for {num_actions} items")
  outcomes = np.zeros((num_actions, len(outcome_names)), bool)
  for action, names in enumerate(actions):
    for name in [names] if isinstance(names, str) else names:
      if name not in outcome_names:
        raise ValueError(f"field 'outcomes': unknown outcome {name!r}; expected {outcome_names}")
      outcomes[action, outcome_names.index(name)] = True
  condition = record.get("condition", "any")
  conditions = ["any", *outcome_names]
  if condition not in conditions:
    raise ValueError(f"field 'condition': unknown condition {condition!r}; expected {conditions}")
  request_time = record.get("request_time")
  if request_time is not None and not (
    _is(request_time, int | float) and math.isfinite(request_time) and request_time >= 0
  ):
    raise ValueError(
      f"field 'request_time': expected finite seconds >= 0, got {reprlib.repr(request_time)}"
    )
  surface = _surface(record.get("surface", 0), "surface", surface_names)
  budgets = record.get("budgets")
  if budgets is not None and (
    not isinstance(budgets, dict)
    or set(budgets) - set(outcome_names)
    or not all(_is(w, int) and w >= 0 for w in budgets.values())
    or (budgets and not sum(budgets.values()))
  ):
    raise ValueError(
      f"field 'budgets': expected non-negative integer weights of {outcome_names} with a "
      f"positive total, got {reprlib.repr(budgets)}"
    )
  return UserRequest(
    user=user,
    items=items,
    outcomes=outcomes,
    times=60.0 * np.arange(num_actions) if times is None else times,
    surfaces=np.zeros(num_actions, np.int64) if surfaces is None else surfaces,
    request_time=None if request_time is None else float(request_time),
    request_surface=surface,
    condition=conditions.index(condition),
    budgets=budgets,
  )


def _is(value: object, kinds: type | types.UnionType) -> bool:
  """`isinstance`, except that JSON's true and false are no numbers."""
  return isinstance(value, kinds) and not isinstance(value, bool)


def _surface(value: object, field: str, surface_names: Sequence[str]) -> int:
  """A surface index from an integer or, where the data name surfaces, a name."""
  if isinstance(value, str) and surface_names:
    if value not in surface_names:
      raise ValueError(
        f"field {field!r}: unknown surface {value!r}; expected one of {tuple(surface_names)}"
      )
    return list(surface_names).index(value)
  if not _is(value, int) or not 0 <= value < 2**31:  # the model's surfaces are int32
    what = "a non-negative integer" + (" or a surface name" if surface_names else "")
    raise ValueError(f"field {field!r}: expected {what}, got {reprlib.repr(value)}")
  return value


def _array(
  record: dict, name: str, dtype: type[np.generic], length: int | None = None
) -> np.ndarray | None:
  """Field `name`, a list of `length` integers (or numbers, for a float `dtype`, or strings,
  for `np.str_`), or None."""
  values = record.get(name)
  if values is None:
    return None
  if np.issubdtype(dtype, np.integer):
    kinds, what = int, "integers"
  else:
    kinds, what = (str, "strings") if dtype is np.str_ else (int | float, "numbers")
  if not isinstance(values, list) or not all(_is(v, kinds) for v in values):
    raise ValueError(f"field {name!r}: expected a list of {what}, got {reprlib.repr(values)}")
  if length is not None and len(values) != length:
    raise ValueError(f"field {name!r}: {len(values)} {name} for {length} items")
  try:
    return np.asarray(values, dtype)
  except OverflowError:
    raise ValueError(f"field {name!r}: {what} out of range in {reprlib.repr(values)}") from None


def format_recommendation(recommendation: Recommendation, outcome_names: Sequence[str]) -> dict:
  """The JSON-ready output line of one user."""
  probabilities = recommendation.outcome_probabilities
  return {
    "user": recommendation.user,
    "items": recommendation.items.tolist(),
    "scores": recommendation.scores.tolist(),
    "retrieval_scores": recommendation.retrieval_scores.tolist(),
    "probabilities": {name: probabilities[:, o].tolist() for o, name in enumerate(outcome_names)},
    "retrieved_for": [(["any", *outcome_names])[c] for c in recommendation.retrieved_for],
    "cold_start": recommendation.cold_start,
    "unknown_items": list(recommendation.unknown_items),
  }


def open_index(
  serving: ServingModel, run: RunConfig, index_dir: str, rebuild: bool = False
) -> store.ItemIndex:
  """The index in `index_dir`, built from `serving` first when absent or when `rebuild`.

  An existing index of another model is refused (IndexMismatchError) unless `rebuild`.
  """
  manifest = serving.manifest(run.index)
  if rebuild or not os.path.exists(os.path.join(index_dir, store.CURRENT)):
    vectors = serving.item_vectors()
    with tqdm.tqdm(total=len(vectors) - 1, desc="indexing items", unit="item") as bar:
      store.write(index_dir, manifest, vectors, lambda done, _: bar.update(done - bar.n))
  return store.load(index_dir, view=run.serving.view, expected=manifest)


@dataclasses.dataclass(frozen=True)
class FileSummary:
  """What `recommend_file` wrote: one line per non-blank input line, `failed` of them errors."""

  lines: int
  failed: int


_Entry = tuple[int, UserRequest | str]  # (line number, its request or its error)


def _read_requests(path: str, recommender: Recommender) -> Iterator[_Entry]:
  """The entries of the non-blank lines of `path`, in order, in `recommender`'s ids and names."""
  with open(path, "rb") as f:  # bytes: a line that is not UTF-8 is that line's error only
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line.rstrip())
      except json.JSONDecodeError as error:
        yield number, f"line {number}: invalid JSON: {error.msg} at column {error.colno}"
        continue
      except UnicodeDecodeError as error:
        yield number, f"line {number}: invalid JSON: {error}"
        continue
      try:
        request = parse_request(
          record,
          recommender.serving.outcome_names,
          recommender.vocabulary,
          recommender.surface_names,
        )
      except ValueError as error:
        yield number, f"line {number}: {error}"
        continue
      yield number, request


def _chunks(entries: Iterable[_Entry], size: int) -> Iterator[list[_Entry]]:
  """Consecutive entries holding `size` requests each (the last may hold fewer).

  Error lines ride along, so the good lines are batched as if the file held only them.
  """
  chunk, requests = [], 0
  for entry in entries:
    chunk.append(entry)
    requests += isinstance(entry[1], UserRequest)
    if requests == size:
      yield chunk
      chunk, requests = [], 0
  if chunk:
    yield chunk


def _answers(
  chunk: list[_Entry], recommender: Recommender, outcome_names: Sequence[str]
) -> Iterator[dict]:
  """The output records of `chunk`, in order: recommendations and error records."""
  requests = [entry for _, entry in chunk if isinstance(entry, UserRequest)]
  recommendations = iter(recommender.recommend(requests) if requests else [])
  for number, entry in chunk:
    if isinstance(entry, UserRequest):
      yield format_recommendation(next(recommendations), outcome_names)
    else:
      yield {"line": number, "error": entry}


def check_users_file(path: str) -> None:
  """Raises `MissingPathError` unless `path` is a file (before anything slow is loaded)."""
  if not os.path.isfile(path):
    raise MissingPathError(f"{path}: no such users file")


def workdir_recommender(
  workdir: str, rebuild_index: bool = False, run: RunConfig | None = None
) -> Recommender:
  """The `Recommender` of a training work directory: its served step, from `workdir/index`.

  Prepares the run's data (`restore_serving_model`), for the item vocabulary and surface names
  too; a bundle (`serving/bundle.py`) reads them from its files.

  Args:
    workdir: the training run's work directory (checkpoints, config.json, index/).
    rebuild_index: rebuild `workdir/index` from the checkpoint even if one exists.
    run: the run's configuration; read from `workdir/config.json` when omitted.
  """
  run = run or read_run_config(workdir)
  serving, experiment = restore_serving_model(workdir, run)
  index = open_index(serving, run, os.path.join(workdir, INDEX_DIR), rebuild_index)
  logging.info("index %s: %s", index.path, index.manifest.index)
  data = experiment.data
  return Recommender(
    serving,
    index,
    run.serving,
    vocabulary=data.item_vocabulary,
    surface_names=data.logs.surface_names,
  )


def recommend_file(recommender: Recommender, users_path: str, out_path: str) -> FileSummary:
  """Recommends for every user line of `users_path` into `out_path` (written atomically).

  A line that is not valid JSON or has a bad field gets an error record at its
  place instead (the module docstring's format); every other line is answered.

  Args:
    recommender: a work directory's (`workdir_recommender`) or a bundle's.
    users_path: JSON lines of users (the module docstring's format).
    out_path: where the JSON lines of recommendations go.

  Returns:
    How many lines were answered and how many of them with an error record.
  """
  check_users_file(users_path)
  names = recommender.serving.outcome_names
  with open(users_path, "rb") as f:
    total = sum(1 for line in f if line.strip())
  lines = failed = 0
  with (
    records.atomic_text_file(out_path) as out,
    tqdm.tqdm(total=total, desc="users", unit="user") as bar,
  ):
    for chunk in _chunks(_read_requests(users_path, recommender), recommender.config.batch_size):
      for record in _answers(chunk, recommender, names):
        out.write(json.dumps(record) + "\n")
      lines += len(chunk)
      failed += sum(isinstance(entry, str) for _, entry in chunk)
      bar.update(len(chunk))
  return FileSummary(lines, failed)
