"""A work directory's lock, held by the launch that writes there.

Two trainings in one work directory would interleave their checkpoints and
overwrite each other's config.json and results.json. The lock is a small
JSON file (host, PID, start time) that appears atomically, complete; a
second acquirer is refused with `WorkdirLocked`. A lock left by a dead
process of this host is taken over with a warning; one of another host,
whose process cannot be checked from here, is refused.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import tempfile

from absl import logging

from unipinrec.errors import UserInputError

LOCK_FILE = "lock.json"  # in the work directory


class WorkdirLocked(UserInputError, RuntimeError):
  """The work directory is in use by another launch."""


class WorkdirLock:
  """A context manager holding `workdir`'s lock; a no-op where not `primary`.

  In a multi-host run only process 0 (`primary`) takes the lock, for all.
  """

  def __init__(self, workdir: str, primary: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._primary = primary
    self._holder: dict | None = None  # what this lock wrote, while it holds the file

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def acquire(self) -> None:
    """Creates the lock file (and the work directory), or takes a dead process's over.

    Raises:
      WorkdirLocked: when a live process holds the lock, or one of another host.
    """
    if not self._primary:
      return
    os.makedirs(self.workdir, exist_ok=True)
    holder = {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    guard = os.open(self.workdir, os.O_RDONLY)
    try:
      # This host's acquirers take turns, so that only one of them takes a stale lock over.
      fcntl.flock(guard, fcntl.LOCK_EX)
      while not self._create(holder):
        previous = self._read()
        if previous is None:
          continue  # released meanwhile
        if not _dead_here(previous):
          raise WorkdirLocked(
            f"work directory {self.workdir} is in use by a training on host "
            f"{previous['host']}, PID {previous['pid']}, since {previous['since']}; "
            f"stop it or remove {self.path} if it is dead"
          )
        logging.warning(
          "taking over %s from a training that is gone: host %s, PID %s, since %s",
          self.path,
          previous["host"],
          previous["pid"],
          previous["since"],
        )
        os.unlink(self.path)
    finally:
      os.close(guard)  # releases the flock
    self._holder = holder

  def release(self) -> None:
    """Removes the lock file if it is still the one this lock wrote."""
    if self._holder is not None and self._read() == self._holder:
      os.unlink(self.path)
    self._holder = None

  def _create(self, holder: dict) -> bool:
    """Whether the lock file was created, holding `holder`; False when it exists."""
    handle, temporary = tempfile.mkstemp(dir=self.workdir, prefix=".lock-")
    try:
      with os.fdopen(handle, "w") as f:
        json.dump(holder, f)
      # A link appears complete or not at all, and fails when the name exists (also on NFS).
      os.link(temporary, self.path)
      return True
    except FileExistsError:
      return False
    finally:
      os.unlink(temporary)

  def _read(self) -> dict | None:
    """The holder recorded in the lock file ('?' where unreadable), or None without a file."""
    try:
      with open(self.path) as f:
        text = f.read()
    except FileNotFoundError:
      return None
    try:
      record = json.loads(text)
    except json.JSONDecodeError:
      record = {}
    if not isinstance(record, dict):
      record = {}
    return {key: record.get(key, "?") for key in ("host", "pid", "since")}


def _dead_here(holder: dict) -> bool:
  """Whether `holder` is a process of this host that no longer runs."""
  if holder["host"] != socket.gethostname() or not isinstance(holder["pid"], int):
    return False
  try:
    os.kill(holder["pid"], 0)  # signal 0 only checks that the process exists
  except ProcessLookupError:
    return True
  except PermissionError:  # it exists, another user's
    pass
  return False
