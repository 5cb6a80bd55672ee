"""A directory of versions side by side and a `current` link to the one in use, swapped atomically.

A write fills a new version in a `.tmp-*` folder, fsyncs it, renames it to its final name,
then swaps the link with `os.replace` (atomic on POSIX): a crash at any point leaves `current`
on the previous, complete version, and the next write removes what the crash left behind.
The item index (`index/store.py`) and the serving bundle (`export/bundle.py`) are written so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Collection

CURRENT = "current"
TEMPORARY_PREFIX = ".tmp-"


def _fsync(path: str) -> None:
  descriptor = os.open(path, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def fsync_tree(path: str) -> None:
  """Flushes every file under `path` to disk, then each folder's entries, deepest first."""
  for root, _, files in os.walk(path, topdown=False):
    for name in files:
      if not os.path.islink(os.path.join(root, name)):
        _fsync(os.path.join(root, name))
    _fsync(root)


def _remove_stale(directory: str, keep: Collection[str]) -> None:
  """Removes crashed writes' folders and every version but those named in `keep`."""
  for name in os.listdir(directory):
    path = os.path.join(directory, name)
    if name != CURRENT and name not in keep and os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)


def current(directory: str) -> str | None:
  """The path of `directory`'s current version, or None when no write ever completed there."""
  link = os.path.join(directory, CURRENT)
  return os.path.realpath(link) if os.path.exists(link) else None


def publish(directory: str, fill: Callable[[str], None], keep_previous: bool = False) -> str:
  """Makes a new version, filled by `fill(folder)`, `directory`'s current one, atomically.

  `directory` is created if absent. Once the new version is current, whatever crashed writes
  left is removed, and so is the previous version unless `keep_previous` (then the next
  publish removes it).

  Returns:
    The path of the new version.
  """
  os.makedirs(directory, exist_ok=True)
  previous = current(directory)
  previous_name = () if previous is None else (os.path.basename(previous),)
  _remove_stale(directory, keep=previous_name)
  temporary = tempfile.mkdtemp(dir=directory, prefix=TEMPORARY_PREFIX)
  try:
    os.chmod(temporary, 0o755)  # mkdtemp's 0o700 would hide the version from other readers
    fill(temporary)
    fsync_tree(temporary)
    version = f"v{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    os.rename(temporary, os.path.join(directory, version))
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
  link = os.path.join(directory, f"{TEMPORARY_PREFIX}link-{uuid.uuid4().hex[:8]}")
  os.symlink(version, link)
  os.replace(link, os.path.join(directory, CURRENT))
  _fsync(directory)  # the rename and the swap, durable
  _remove_stale(directory, keep=(version, *previous_name) if keep_previous else (version,))
  return os.path.join(directory, version)
