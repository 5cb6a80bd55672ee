"""Batch recommendation: JSON lines of users in, JSON lines of ranked items out.

One input line per user:
  {"user": "u1", "items": [12, 7, 3], "outcomes": ["click", ["click", "save"], "click"],
   "times": [1700000000, 1700000060, 1700000400], "surfaces": [0, 1, 0],
   "request_time": 1700000500, "surface": 0, "condition": "any", "budgets": {"save": 3, "click": 1}}
Only "user" and "items" are required. An action's outcome is a name or a list
of names (default: the first, least valuable outcome); times default to one
minute apart, surfaces to 0, the request time to the last action's, the
condition to "any" (else an outcome name: retrieve for that outcome); "budgets"
(outcome name -> weight) splits the candidates across outcomes instead.

One output line per user, in input order:
  {"user": "u1", "items": [...], "scores": [...], "retrieval_scores": [...],
   "probabilities": {"click": [...], "save": [...]}, "retrieved_for": ["any", ...],
   "cold_start": false, "unknown_items": []}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
import tqdm
from absl import logging

from unipinrec.config import RunConfig
from unipinrec.data.interactions import DataFormatError
from unipinrec.errors import MissingPathError
from unipinrec.export.checkpoint import load_serving_model, read_run_config
from unipinrec.export.model import ServingModel
from unipinrec.index import store
from unipinrec.serving.recommender import Recommendation, Recommender, UserRequest

INDEX_DIR = "index"  # under the work directory


def parse_request(record: dict, outcome_names: Sequence[str]) -> UserRequest:
  """A `UserRequest` from one decoded input line; malformed fields raise ValueError."""
  if "user" not in record or "items" not in record:
    raise ValueError(f"a user line needs 'user' and 'items': {record!r}")
  user = record["user"]
  items = np.asarray(record["items"], dtype=np.int64).reshape(-1)
  num_actions = len(items)

  def column(name: str, default: np.ndarray) -> np.ndarray:
    values = record.get(name)
    if values is None:
      return default
    if len(values) != num_actions:
      raise ValueError(f"user {user!r}: {len(values)} {name} for {num_actions} items")
    return np.asarray(values)

  actions = record.get("outcomes")
  if actions is None:
    actions = [outcome_names[0]] * num_actions
  elif len(actions) != num_actions:
    raise ValueError(f"user {user!r}: {len(actions)} outcomes for {num_actions} items")
  outcomes = np.zeros((num_actions, len(outcome_names)), bool)
  for action, names in enumerate(actions):
    for name in [names] if isinstance(names, str) else names:
      if name not in outcome_names:
        raise ValueError(f"user {user!r}: unknown outcome {name!r}; expected {outcome_names}")
      outcomes[action, outcome_names.index(name)] = True
  condition = record.get("condition", "any")
  conditions = ["any", *outcome_names]
  if condition not in conditions:
    raise ValueError(f"user {user!r}: unknown condition {condition!r}; expected {conditions}")
  request_time = record.get("request_time")
  budgets = record.get("budgets")
  if budgets is not None:
    unknown = sorted(set(budgets) - set(outcome_names))
    if unknown or any(not isinstance(w, int) or w < 0 for w in budgets.values()):
      raise ValueError(
        f"user {user!r}: budgets need non-negative integer weights of {outcome_names}: {budgets!r}"
      )
  return UserRequest(
    user=user,
    items=items,
    outcomes=outcomes,
    times=column("times", 60.0 * np.arange(num_actions)).astype(np.float64),
    surfaces=column("surfaces", np.zeros(num_actions, np.int64)).astype(np.int64),
    request_time=None if request_time is None else float(request_time),
    request_surface=int(record.get("surface", 0)),
    condition=conditions.index(condition),
    budgets=budgets,
  )


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


def _batches(path: str, size: int) -> Iterator[list[tuple[int, dict]]]:
  """Batches of (1-based line number, decoded line) from the JSON lines at `path`."""
  with open(path) as f:
    batch = []
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        batch.append((number, json.loads(line)))
      except json.JSONDecodeError as error:
        raise DataFormatError(path, number, None, f"not JSON ({error})") from None
      if len(batch) == size:
        yield batch
        batch = []
    if batch:
      yield batch


def _parse_line(path: str, number: int, record: dict, outcome_names: Sequence[str]) -> UserRequest:
  """`parse_request` of line `number` of `path`, naming the line when it is malformed."""
  try:
    return parse_request(record, outcome_names)
  except (ValueError, TypeError) as error:  # TypeError: numpy's, on a field of the wrong kind
    raise DataFormatError(path, number, None, str(error)) from None


def recommend_file(
  workdir: str,
  users_path: str,
  out_path: str,
  rebuild_index: bool = False,
  run: RunConfig | None = None,
) -> int:
  """Recommends for every user line of `users_path` into `out_path` (written atomically).

  Args:
    workdir: the training run's work directory (checkpoints, config.json, index/).
    users_path: JSON lines of users (the module docstring's format).
    out_path: where the JSON lines of recommendations go.
    rebuild_index: rebuild `workdir/index` from the checkpoint even if one exists.
    run: the run's configuration; read from `workdir/config.json` when omitted.

  Returns:
    The number of users served.
  """
  if not os.path.isfile(users_path):
    raise MissingPathError(f"{users_path}: no such users file")
  run = run or read_run_config(workdir)
  serving = load_serving_model(workdir, run)
  index = open_index(serving, run, os.path.join(workdir, INDEX_DIR), rebuild_index)
  logging.info("index %s: %s", index.path, index.manifest.index)
  recommender = Recommender(serving, index, run.serving)
  names = serving.outcome_names
  with open(users_path) as f:
    total = sum(1 for line in f if line.strip())
  directory = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".jsonl")
  served = 0
  try:
    with os.fdopen(handle, "w") as out, tqdm.tqdm(total=total, desc="users", unit="user") as bar:
      for records in _batches(users_path, run.serving.batch_size):
        requests = [_parse_line(users_path, n, record, names) for n, record in records]
        for recommendation in recommender.recommend(requests):
          out.write(json.dumps(format_recommendation(recommendation, names)) + "\n")
        served += len(records)
        bar.update(len(records))
      out.flush()
      os.fsync(out.fileno())
    os.replace(temporary, out_path)
  except BaseException:
    os.unlink(temporary)
    raise
  return served
