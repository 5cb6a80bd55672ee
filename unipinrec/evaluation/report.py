"""results.json: the figures of a run with what produced them, written atomically."""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile


def git_commit() -> str:
  """The checkout's commit, with `-dirty` when it has uncommitted changes."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    commit = subprocess.run(
      ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no"],
      cwd=root,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return commit + ("-dirty" if dirty else "")


def commit_record(start_commit: str) -> dict[str, str]:
  """results.json's commit fields: the commit the run's code was loaded from (`git_commit()`
  when it started), and the checkout's commit at the end as well when it has changed since.
  """
  end_commit = git_commit()
  record = {"git_commit": start_commit}
  if end_commit != start_commit:
    record["git_commit_at_end"] = end_commit
  return record


def _ratio(numerator: float, denominator: float) -> float:
  return numerator / denominator if denominator else math.nan


def world_checks(baselines: dict) -> dict:
  """How hard a synthetic world is, from its baselines alone (no model needed).

  Args:
    baselines: "popularity", "oracle" and "history_oracle" reports.
  """
  oracle = baselines["oracle"]
  history = baselines["history_oracle"]
  return {
    "oracle_hr@10": oracle["retrieval"]["hr@10"],
    "oracle_auc_engaged_over_popularity": oracle["ranking"]["auc_engaged"]
    - baselines["popularity"]["ranking"]["auc_engaged"],
    # What the history leaves undetermined: the oracle's lead over its history estimate.
    "history_oracle_auc_engaged_gap_to_oracle": oracle["ranking"]["auc_engaged"]
    - history["ranking"]["auc_engaged"],
    "history_oracle_hr@10_over_oracle": _ratio(
      history["retrieval"]["hr@10"], oracle["retrieval"]["hr@10"]
    ),
  }


def quality_checks(report: dict, baselines: dict) -> dict:
  """The ratios the synthetic default is judged by, next to the raw figures."""
  model_hr = report["retrieval"]["hr@10"]
  checks = {
    "hr@10_over_popularity": _ratio(model_hr, baselines["popularity"]["retrieval"]["hr@10"]),
  }
  if "oracle" in baselines:
    oracle = baselines["oracle"]
    checks.update(
      {
        "hr@10_over_oracle": _ratio(model_hr, oracle["retrieval"]["hr@10"]),
        "auc_engaged_gap_to_oracle": oracle["ranking"]["auc_engaged"]
        - report["ranking"]["auc_engaged"],
        **world_checks(baselines),
      }
    )
  return checks


def write_json_atomic(path: str, document: dict) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it into place."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(handle, "w") as f:
      json.dump(document, f, indent=2, sort_keys=False, allow_nan=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise
