"""The device mesh, the logical-axis rules, and host batch -> global arrays.

The model names logical axes only (`vocab`, `embed`, `mlp`, ...); this module
is the one place that maps them onto the mesh axes:

  data   replicas: the batch is split, parameters and optimizer state are copied
         (the axis to put across slices or slow links);
  fsdp   the batch is split and so are parameters and optimizer state (FSDP /
         ZeRO-3: weights are gathered for each layer's matmul);
  model  tensor parallelism: attention heads, MLP hidden units and the
         vocabulary are split, the batch is not.

The item table is split over its vocabulary on `fsdp` x `model` together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")

# Logical axis -> mesh axes, in priority order: an array dimension takes the
# first rule whose mesh axes no other dimension of the same array holds yet.
# `vocab` precedes `embed`, so the item table [vocab, embed] is split by rows.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  ("batch", ("data", "fsdp")),
  ("vocab", ("fsdp", "model")),
  ("heads", "model"),
  ("mlp", "model"),
  ("embed", "fsdp"),
  ("kv", None),
  ("action", None),
  ("condition", None),
  ("offset", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Devices along each mesh axis; one axis may be -1: all the devices the others leave."""

  data: int = 1  # replicas: batch split, parameters copied
  fsdp: int = -1  # batch, parameters and optimizer state split
  model: int = 1  # attention heads, MLP hidden units and vocabulary split

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    """The (data, fsdp, model) sizes on `num_devices` devices."""
    sizes = [self.data, self.fsdp, self.model]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
      raise ValueError(f"mesh {self}: sizes must be positive, with at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % known:
        raise ValueError(f"mesh {self}: {num_devices} devices are not divisible by {known}")
      sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
      raise ValueError(f"mesh {self} needs {math.prod(sizes)} devices, there are {num_devices}")
    return tuple(sizes)


def make_mesh(config: MeshConfig, devices: list[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, model) mesh over `devices` (default: every device of every process).

  `jax.make_mesh` orders the devices for the physical topology (TPU rings).
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh(
    config.shape(len(devices)),
    MESH_AXES,
    axis_types=(AxisType.Auto,) * len(MESH_AXES),
    devices=devices,
  )


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """Drops the mesh axes, last first, that do not divide their dimension evenly."""
  fitted = []
  for axes, size in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape, strict=True):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    while axes and size % math.prod(mesh.shape[a] for a in axes):
      axes = axes[:-1]
    fitted.append(axes[0] if len(axes) == 1 else (axes or None))
  return PartitionSpec(*fitted)


def logical_shardings(mesh: Mesh, abstract_tree) -> object:
  """NamedShardings for a tree whose leaves may be `nn.Partitioned` boxes.

  A dimension that a rule's mesh axes do not divide keeps fewer of them (or
  none), with a log line: the item table is padded (`item_table_multiple`)
  so that it always divides.
  """
  specs = nn.get_partition_spec(abstract_tree)
  uneven = set()

  def sharding_of(logical: PartitionSpec, leaf) -> NamedSharding:
    if not hasattr(leaf, "shape"):  # an empty subtree, e.g. optax's masked-out moments
      return replicated(mesh)
    wanted = nn.logical_to_mesh_axes(tuple(logical), LOGICAL_RULES)
    fitted = _fit(wanted, leaf.shape, mesh)
    if fitted != _fit(wanted, (0,) * len(leaf.shape), mesh):  # (0: every axis divides it)
      uneven.add((tuple(logical), leaf.shape, str(fitted)))
    return NamedSharding(mesh, fitted)

  shardings = jax.tree.map(
    sharding_of, specs, nn.unbox(abstract_tree), is_leaf=lambda x: isinstance(x, PartitionSpec)
  )
  for logical, shape, fitted in sorted(uneven, key=str):
    logging.info(
      "%s %s does not divide over the mesh %s: sharded %s", logical, shape, dict(mesh.shape), fitted
    )
  return shardings


def replicated(mesh: Mesh) -> NamedSharding:
  """A sharding that keeps a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def mesh_of(params) -> Mesh | None:
  """The mesh the parameters live on, when they are split or copied by a NamedSharding."""
  placement = getattr(jax.tree.leaves(params)[0], "sharding", None)
  return placement.mesh if isinstance(placement, NamedSharding) else None


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (example) dimension over the `batch` mesh axes, the rest replicated."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), LOGICAL_RULES))


def batch_shards(mesh: Mesh | AbstractMesh) -> int:
  """How many parts the batch is split into (the product of the `batch` mesh axes)."""
  (axes,) = nn.logical_to_mesh_axes(("batch",), LOGICAL_RULES)
  return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))


def traced_batch_shards() -> int:
  """`batch_shards` of the mesh `activation_sharding` set for the function being traced; 1 if
  none."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else batch_shards(mesh)


def process_batch_shard(mesh: Mesh, global_batch_size: int) -> tuple[int, int]:
  """(index, count): this process holds part `index` of `count` equal parts of each batch.

  The rows a process holds follow from the mesh: those of its own devices.
  Processes whose devices hold the same rows (a `model` axis across hosts)
  read the same part.
  """
  if global_batch_size % batch_shards(mesh):
    raise ValueError(
      f"batch_size {global_batch_size} is not divisible by the {batch_shards(mesh)} batch "
      f"shards of the mesh {dict(mesh.shape)}"
    )
  indices = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
  rows = sorted({index[0].indices(global_batch_size)[:2] for index in indices.values()})
  start, stop = rows[0][0], rows[-1][1]
  if any(a[1] != b[0] for a, b in zip(rows, rows[1:], strict=False)):
    raise ValueError(f"process {jax.process_index()} holds rows {rows}: not one contiguous part")
  if global_batch_size % (stop - start) or start % (stop - start):
    raise ValueError(
      f"process {jax.process_index()} holds rows {start}:{stop} of {global_batch_size}"
    )
  return start // (stop - start), global_batch_size // (stop - start)


def global_batch(
  mesh: Mesh, host_batch: Mapping[str, np.ndarray], global_batch_size: int
) -> dict[str, jax.Array]:
  """This process's part of a batch (`process_batch_shard`) -> global arrays.

  The one place where host data becomes device data: each process passes its
  own rows and the global batch is assembled from them.
  """
  sharding = batch_sharding(mesh)
  arrays = {}
  for name, value in host_batch.items():
    value = np.asarray(value)
    arrays[name] = jax.make_array_from_process_local_data(
      sharding, value, (global_batch_size,) + value.shape[1:]
    )
  return arrays


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
  """Asks for `x` split by its logical axes; a no-op outside `activation_sharding`."""
  return nn.with_logical_constraint(x, logical_axes, rules=LOGICAL_RULES)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh) -> Iterator[None]:
  """Makes `constrain` take effect on `mesh`, inside the function being traced.

  Entered inside the jitted function (jit allows an abstract mesh there), so
  the constraints are part of the compiled step whoever calls it. The rules
  are passed to each constraint rather than set in flax's global context:
  there they would also reach flax's parameter shape checks, which trip on
  `DenseGeneral`'s flattened kernels.
  """
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    yield
