"""Shared pytest setup: CPU unless told otherwise, and where the public data sets live."""

import atexit
import os
import pathlib
import shutil
import tempfile

import pytest

from experiments import huge_pages

# Before any test imports JAX: the tests are written for CPU; set JAX_PLATFORMS to override.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One JAX compilation cache for the whole session, its xdist workers and the launchers the
# tests start: a program compiled once (the small run a test trains, kills and reruns; the
# runlocal train step that several modules build) is loaded from disk after that. Loaded
# executables are the compiled ones, so results are bit for bit those of a cold start.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="unipinrec-tests-jax-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)  # only where it was made
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  # Small programs too: a launch compiles dozens, most well under the 1 s default.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' programs are small and compiled far more often than run: XLA's cheapest compile.
os.environ.setdefault(
  "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)
# Test subprocesses and the xdist workers (started after this file is read) get the
# launchers' malloc on huge pages (experiments/huge_pages.py): their steps run 1.2-1.5x faster.
_TUNABLES = huge_pages.tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES", ""))
if _TUNABLES is not None:
  os.environ["GLIBC_TUNABLES"] = _TUNABLES


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  """`../shared/data` next to the repository (PROTOCOL.md); skips the test when it is absent."""
  repo_root = pathlib.Path(__file__).resolve().parent.parent
  data_dir = repo_root.parent / "shared" / "data"
  if not data_dir.is_dir():
    pytest.skip(f"../shared/data is absent: expected the public data sets at {data_dir}")
  return data_dir
