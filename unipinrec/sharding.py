"""The device mesh, the logical-axis rules, and host batch -> global arrays.

The model names logical axes only (`vocab`, `embed`, `mlp`, ...); this module
is the one place that maps them onto mesh axes.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "model")

# Logical axis -> mesh axis. The item table is split over its vocabulary,
# the widest weights over their hidden dimension, the batch over `data`.
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
  ("batch", "data"),
  ("vocab", "model"),
  ("mlp", "model"),
  ("heads", "model"),
  ("embed", None),
  ("kv", None),
  ("action", None),
  ("condition", None),
  ("offset", None),
)


def make_mesh(model_parallelism: int = 1) -> Mesh:
  """A (data, model) mesh over every device of every process.

  Args:
    model_parallelism: devices along `model`; the rest go to `data`.
  """
  devices = jax.devices()
  if len(devices) % model_parallelism:
    raise ValueError(
      f"{len(devices)} devices cannot be split into model_parallelism={model_parallelism}"
    )
  shape = (len(devices) // model_parallelism, model_parallelism)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_shardings(mesh: Mesh, abstract_tree) -> object:
  """NamedShardings for a tree whose leaves may be `nn.Partitioned` boxes."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that keeps a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (example) dimension over `data`, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(mesh: Mesh, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """This process's examples -> global arrays sharded over `data`.

  The one place where host data becomes device data: each process passes
  its own slice, and the global batch is their concatenation.
  """
  sharding = batch_sharding(mesh)
  return {
    name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
    for name, value in host_batch.items()
  }
