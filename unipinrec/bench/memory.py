"""Per-device memory of a run on a mesh, read before launching it.

The state is abstract (shapes and shardings, nothing allocated) and the
sharded train step is compiled ahead of time for the mesh, so a 50M-item
table can be planned on a laptop. Two views of the same program:

- from the shardings: bytes of each parameter and optimizer moment on one
  device, exact for any backend;
- from XLA's memory analysis of the compiled step: arguments, outputs,
  temporaries (activations, gradients, workspace). It is the backend's
  figure: a CPU compile differs from a TPU or GPU one in temporaries (fusion,
  layouts; XLA:CPU keeps float32 copies around bf16 dots) but not in
  arguments, so plan a TPU slice on TPU devices (compile-only ones will do).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from unipinrec import sharding
from unipinrec.config import RunConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train import partition
from unipinrec.train.state import example_batch, make_optimizer

ID_TABLES = ("item_embedding", "hashed_embedding")  # the id part: a row per item, or hashed
MIB = 1024**2
GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Bytes on the most loaded device; `compiled_*` from XLA's memory analysis."""

  mesh_shape: dict[str, int]
  device_kind: str  # the compiler's target, e.g. "cpu" or "TPU v5 lite"
  num_items: int
  embed_dim: int
  batch_size: int
  compute_dtype: str  # the model's matmuls and activations; parameters and Adam stay float32
  item_table_bytes: int
  params_bytes: int
  optimizer_bytes: int
  inputs_bytes: int  # the batch and the item log-frequencies
  compiled_argument_bytes: int
  compiled_output_bytes: int
  compiled_alias_bytes: int  # outputs written over donated inputs (the state)
  compiled_temp_bytes: int
  # A TPU or GPU compiler refuses a step that cannot fit its device: its message, else "".
  compiler_refusal: str = ""

  @property
  def peak_bytes(self) -> int:
    """Everything live at once: arguments, outputs not aliased to them, temporaries."""
    return (
      self.compiled_argument_bytes
      + self.compiled_output_bytes
      - self.compiled_alias_bytes
      + self.compiled_temp_bytes
    )


def device_bytes(tree) -> int:
  """Bytes of `tree`'s arrays (or ShapeDtypeStructs with a sharding) on its most loaded device."""
  loads = {}
  for leaf in jax.tree.leaves(tree):
    itemsize = np.dtype(leaf.dtype).itemsize
    for device, index in leaf.sharding.devices_indices_map(leaf.shape).items():
      shard = [len(range(*i.indices(n))) for i, n in zip(index, leaf.shape, strict=True)]
      loads[device] = loads.get(device, 0) + math.prod(shard) * itemsize
  return max(loads.values(), default=0)


def plan_memory(
  run: RunConfig,
  num_items: int,
  num_outcomes: int,
  num_surfaces: int,
  slate_size: int,
  devices: list[jax.Device] | None = None,
) -> MemoryPlan:
  """Compiles `run`'s train step for its mesh on `devices` (default all) and measures it.

  Args:
    run: the run configuration (model sizes, batch, mesh, optimizer, step).
    num_items: catalogue size N (the data sets it in training).
    num_outcomes: outcome types O.
    num_surfaces: request surfaces.
    slate_size: candidates per slate C.
    devices: the devices the mesh spans.
  """
  model = UniPinRec(run.model.with_data_sizes(num_items, num_outcomes, num_surfaces))
  mesh = sharding.make_mesh(run.mesh, devices)
  optimizer = make_optimizer(run.optimizer, run.num_steps)
  example = example_batch(model, run.batch_size, run.data.max_slates, slate_size)
  state = partition.abstract_state(model, optimizer, mesh, example)
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  batch_sharding = sharding.batch_sharding(mesh)
  batch = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding), example
  )
  frequency = jax.ShapeDtypeStruct((num_items + 1,), np.float32, sharding=sharding.replicated(mesh))
  step = partition.jit_train_step(model, optimizer, run.step, run.seed + 1, mesh, state_shardings)
  refusal, analysis = "", None
  try:
    analysis = step.lower(state, batch, frequency).compile().memory_analysis()
  except jax.errors.JaxRuntimeError as error:
    if "RESOURCE_EXHAUSTED" not in str(error):
      raise
    refusal = str(error).strip().splitlines()[0]
  return MemoryPlan(
    mesh_shape=dict(mesh.shape),
    device_kind=mesh.devices.flat[0].device_kind,
    num_items=num_items,
    embed_dim=model.config.embed_dim,
    batch_size=run.batch_size,
    compute_dtype=model.config.dtype,
    item_table_bytes=device_bytes(
      {k: v for k, v in state.params["tokenizer"].items() if k in ID_TABLES}
    ),
    params_bytes=device_bytes(state.params),
    optimizer_bytes=device_bytes(state.opt_state),
    inputs_bytes=device_bytes((batch, frequency)),
    compiled_argument_bytes=analysis.argument_size_in_bytes if analysis else 0,
    compiled_output_bytes=analysis.output_size_in_bytes if analysis else 0,
    compiled_alias_bytes=analysis.alias_size_in_bytes if analysis else 0,
    compiled_temp_bytes=analysis.temp_size_in_bytes if analysis else 0,
    compiler_refusal=refusal,
  )


def format_plan(plan: MemoryPlan, device_memory_bytes: int = 0) -> str:
  """A table of the plan in MiB; with `device_memory_bytes`, whether the peak fits."""
  mesh = " ".join(f"{k}={v}" for k, v in plan.mesh_shape.items())
  rows = [
    ("parameters", plan.params_bytes, f"item table {plan.item_table_bytes / MIB:,.1f}"),
    ("optimizer state", plan.optimizer_bytes, "Adam moments, split like the parameters"),
    ("batch + item frequencies", plan.inputs_bytes, ""),
  ]
  compiled = [
    ("compiled: arguments", plan.compiled_argument_bytes, "the three above, as XLA counts"),
    ("compiled: outputs", plan.compiled_output_bytes, ""),
    ("compiled: aliased", plan.compiled_alias_bytes, "outputs over the donated state"),
    ("compiled: temporaries", plan.compiled_temp_bytes, "activations, gradients, workspace"),
    ("peak", plan.peak_bytes, "arguments + outputs - aliased + temporaries"),
  ]
  lines = [
    f"mesh {mesh} ({math.prod(plan.mesh_shape.values())} {plan.device_kind} devices); "
    f"{plan.num_items:,} items x {plan.embed_dim}; global batch {plan.batch_size}; "
    f"compute {plan.compute_dtype}",
    f"{'per device':<26} {'MiB':>10}",
  ]
  # A refused compile has no memory analysis: the state's bytes and the compiler's reason.
  rows += [] if plan.compiler_refusal else compiled
  lines += [f"{name:<26} {size / MIB:>10,.1f}  {note}".rstrip() for name, size, note in rows]
  if plan.compiler_refusal:
    lines.append(f"does NOT fit: the {plan.device_kind} compiler: {plan.compiler_refusal}")
  elif device_memory_bytes:
    share = plan.peak_bytes / device_memory_bytes
    verdict = "fits" if share <= 1 else "does NOT fit"
    lines.append(f"{verdict} in {device_memory_bytes / GIB:.1f} GiB per device ({share:.0%} used)")
  return "\n".join(lines)
