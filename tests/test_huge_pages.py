"""The launchers' restart with huge pages for malloc (experiments/huge_pages.py)."""

import os
import pathlib
import platform
import subprocess
import sys

import pytest

from experiments import huge_pages

REPO = pathlib.Path(__file__).resolve().parent.parent
GLIBC_ONLY = pytest.mark.skipif(
  sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc tunables only"
)

# Prints its PID and GLIBC_TUNABLES before and after the restart.
SCRIPT = """
import os
from experiments import huge_pages
print("before", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), flush=True)
huge_pages.reexec_with_huge_pages()
print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), flush=True)
"""


@pytest.mark.parametrize(
  "current, expected",
  [
    ("", "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", None),  # the user's opt-out is kept
    ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", None),
    ("glibc.malloc.hugetlbx=1", "glibc.malloc.hugetlbx=1:glibc.malloc.hugetlb=1"),
  ],
)
def test_tunables_add_huge_pages_once(current, expected):
  assert huge_pages.tunables_with_huge_pages(current) == expected


def _run(tunables: str | None) -> list[list[str]]:
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if tunables is not None:
    env["GLIBC_TUNABLES"] = tunables
  done = subprocess.run(
    [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, check=True
  )
  return [line.split(" ", 2) for line in done.stdout.splitlines()]


@GLIBC_ONLY
def test_restarts_once_in_the_same_process_with_the_tunable():
  before, again, after = _run(None)
  assert before == ["before", before[1], ""]
  # The restarted process runs the script from the top, with the tunable, and goes on.
  assert again == ["before", before[1], "glibc.malloc.hugetlb=1"]
  assert after == ["after", before[1], "glibc.malloc.hugetlb=1"]


@GLIBC_ONLY
def test_an_explicit_setting_is_not_restarted():
  lines = _run("glibc.malloc.hugetlb=0")
  assert [line[0] for line in lines] == ["before", "after"]
  assert lines[1][2] == "glibc.malloc.hugetlb=0"
