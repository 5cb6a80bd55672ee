"""Mesh, partition rules and the sharded step: 8 fake CPU devices under three meshes vs 1 device."""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import sharded_run
from hang_guard import HANG_SECONDS
from jax.sharding import AbstractMesh, PartitionSpec

from unipinrec import sharding

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(the 1-device run here, {mesh name: (arrays, shardings facts)} from 8 fake devices)."""
  out = tmp_path_factory.mktemp("sharded")
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=str(REPO),
    XLA_FLAGS="--xla_force_host_platform_device_count=8",
  )
  process = subprocess.Popen(
    [sys.executable, str(REPO / "tests" / "sharded_run.py"), str(out)],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    # The reference runs here while the subprocess compiles: two cores, two jobs.
    one_device = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    reference, _ = sharded_run.train_steps(one_device)
    _, stderr = process.communicate(timeout=HANG_SECONDS)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert process.returncode == 0, stderr[-3000:]
  sharded = {
    name: (dict(np.load(out / f"{name}.npz")), json.loads((out / f"{name}.json").read_text()))
    for name in sharded_run.MESHES
  }
  return reference, sharded


@pytest.mark.parametrize("name", list(sharded_run.MESHES))
def test_sharded_steps_match_one_device(runs, name):
  reference, sharded = runs
  arrays, _ = sharded[name]
  assert sorted(arrays) == sorted(reference)
  # Losses of the three steps, then every updated parameter, to float32 rounding.
  np.testing.assert_allclose(arrays["losses"], reference["losses"], rtol=1e-5)
  assert reference["losses"][-1] != reference["losses"][0]  # the steps did change something
  for key, want in reference.items():
    np.testing.assert_allclose(arrays[key], want, rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", list(sharded_run.MESHES))
def test_item_table_is_split_over_its_vocabulary(runs, name):
  _, sharded = runs
  _, facts = sharded[name]
  data, fsdp, model = sharded_run.MESHES[name]
  rows = sharded_run.MODEL.item_table_rows
  assert rows == 64
  split = "P(('fsdp', 'model'), None)"
  # The state, its Adam moments and the compiled step's input all split the rows.
  assert facts["table_spec"] == facts["compiled_table_spec"] == split
  assert facts["table_moment_specs"] == [split]
  assert facts["table_shard_rows"] == [rows // (fsdp * model)]
  assert facts["table_device_bytes"] == rows // (fsdp * model) * sharded_run.MODEL.embed_dim * 4
  assert facts["table_devices"] == data * fsdp * model
  assert facts["bias_spec"] == "P(('fsdp', 'model'),)"  # the item bias splits as the table
  # Dense weights FSDP over `fsdp`, hidden units over `model`.
  assert facts["mlp_kernel_spec"] == "P('fsdp', 'model')"
  assert facts["donated_table_deleted"]


def test_mesh_config_fills_in_the_rest():
  assert sharding.MeshConfig().shape(8) == (1, 8, 1)
  assert sharding.MeshConfig(data=2, fsdp=-1, model=2).shape(8) == (2, 2, 2)
  assert sharding.MeshConfig(data=-1, fsdp=1, model=1).shape(4) == (4, 1, 1)
  for bad in (
    sharding.MeshConfig(data=-1, fsdp=-1),
    sharding.MeshConfig(fsdp=3),
    sharding.MeshConfig(data=2, fsdp=2, model=1),
  ):
    with pytest.raises(ValueError, match="mesh"):
      bad.shape(8)


def test_rules_split_what_divides_and_keep_the_rest_whole():
  mesh = AbstractMesh((2, 4, 2), sharding.MESH_AXES)
  boxed = {
    "table": nn.Partitioned(jax.ShapeDtypeStruct((1024, 24), np.float32), ("vocab", "embed")),
    "odd_table": nn.Partitioned(jax.ShapeDtypeStruct((601, 24), np.float32), ("vocab", "embed")),
    "kernel": nn.Partitioned(
      jax.ShapeDtypeStruct((24, 3, 2, 12), np.float32), ("embed", None, "heads", "kv")
    ),
    "narrow": nn.Partitioned(jax.ShapeDtypeStruct((6, 32), np.float32), ("embed", "mlp")),
    "bias": jax.ShapeDtypeStruct((24,), np.float32),
  }
  specs = {k: v.spec for k, v in sharding.logical_shardings(mesh, boxed).items()}
  assert specs == {
    "table": PartitionSpec(("fsdp", "model"), None),
    # 601 rows divide over neither 8 nor 4 devices: whole (the padded table never is).
    "odd_table": PartitionSpec(None, None),
    "kernel": PartitionSpec("fsdp", None, "model", None),
    "narrow": PartitionSpec(None, "model"),  # 6 does not divide over fsdp=4
    "bias": PartitionSpec(None),
  }
  assert sharding.batch_sharding(mesh).spec == PartitionSpec(("data", "fsdp"))
