"""A process's own peak memory, and a runner that reports it for any Python module.

  python -m unipinrec.bench.peak_rss RESULT_PATH MODULE [ARGS...]

runs MODULE as `python -m MODULE ARGS...` would, then writes {"peak_rss_bytes": ...} to
RESULT_PATH at exit, whatever the exit status. The peak is the kernel's high-water mark of
the process's resident set since it started this program (`VmHWM`): `ru_maxrss` from the
parent's `wait4` also keeps the forking parent's resident set, so it cannot tell a point's
memory from the benchmark's own.
"""

from __future__ import annotations

import atexit
import runpy
import sys

from unipinrec.records import write_json_atomic


def peak_rss_bytes() -> int:
  """This process's peak resident set in bytes (`VmHWM` of /proc/self/status)."""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024  # reported in kB
  raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")


def main(argv: list[str]) -> None:
  """RESULT_PATH MODULE [ARGS...] (the module docstring)."""
  result, module = argv[0], argv[1]
  atexit.register(lambda: write_json_atomic(result, {"peak_rss_bytes": peak_rss_bytes()}))
  sys.argv = [module, *argv[2:]]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main(sys.argv[1:])
