"""Huge pages for the host's malloc: faster train steps on CPU.

XLA:CPU allocates each step's buffers anew with malloc. glibc serves those
above 32 MiB with a fresh mmap and returns them with munmap, so every step
faults its temporaries back in 4 KiB at a time, and a large share of a
training run's CPU time goes to the kernel. glibc's tunable
`glibc.malloc.hugetlb=1` (glibc 2.35 and later) asks for transparent huge
pages instead: far fewer faults (RESULTS.md, "Training speed", has the
measured steps). The tunable is read when a process starts, so the launchers
re-execute themselves once with it.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"


def tunables_with_huge_pages(current: str) -> str | None:
  """GLIBC_TUNABLES with huge pages added, or None when it already sets `TUNABLE`.

  A value the user set, `glibc.malloc.hugetlb=0` included, is kept: that is
  the way to opt out.
  """
  settings = [item for item in current.split(":") if item]
  if any(item.split("=", 1)[0] == TUNABLE for item in settings):
    return None
  return ":".join(settings + [f"{TUNABLE}=1"])


def reexec_with_huge_pages() -> None:
  """Re-executes this process, same PID and arguments, with huge pages for malloc.

  Does nothing off Linux/glibc, when GLIBC_TUNABLES already names the tunable
  (so the new process does not re-execute again), or when the original
  command line is unknown. Call it before any work: the process restarts.
  """
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return
  tunables = tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES", ""))
  if tunables is None or not sys.executable or not sys.orig_argv:
    return
  os.environ["GLIBC_TUNABLES"] = tunables
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, sys.orig_argv)
