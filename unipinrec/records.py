"""What produced a file (the checkout's commit), and JSON records written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from typing import TextIO


def git_commit() -> str:
  """The checkout's commit, with `-dirty` when it has uncommitted changes."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
  """A record's commit fields: the commit the run's code was loaded from (`git_commit()`
  when it started), and the checkout's commit at the end as well when it has changed since.
  """
  end_commit = git_commit()
  record = {"git_commit": start_commit}
  if end_commit != start_commit:
    record["git_commit_at_end"] = end_commit
  return record


@contextlib.contextmanager
def atomic_text_file(path: str) -> Iterator[TextIO]:
  """A text file written beside `path` and renamed into place when the block ends.

  A failure (or a kill) leaves whatever `path` held before untouched.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  suffix = os.path.splitext(path)[1]
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
  try:
    with os.fdopen(handle, "w") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


def write_json_atomic(path: str, document: dict) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it into place."""
  with atomic_text_file(path) as f:
    json.dump(document, f, indent=2, sort_keys=False, allow_nan=True)
    f.write("\n")
