"""Shared pytest setup: CPU unless told otherwise, and where the public data sets live."""

import os
import pathlib

import pytest

# Before any test imports JAX: the tests are written for CPU; set JAX_PLATFORMS to override.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  """`../shared/data` next to the repository (PROTOCOL.md); skips the test when it is absent."""
  repo_root = pathlib.Path(__file__).resolve().parent.parent
  data_dir = repo_root.parent / "shared" / "data"
  if not data_dir.is_dir():
    pytest.skip(f"../shared/data is absent: expected the public data sets at {data_dir}")
  return data_dir
