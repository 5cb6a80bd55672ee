"""Prints per-device bytes of parameters, optimizer state and activations for a config on a mesh.

  python -m experiments.memory --config=experiments/configs/synthetic.py \
    --config.model.embed_dim=256 --config.batch_size=1024 --num_items=50000000 \
    --devices=64 --device_memory_gib=16

`--devices=N` compiles for N simulated CPU devices, so a pod slice is planned
on any machine; `--topology=v5e:8x8` compiles with the TPU compiler itself for that
slice, on a machine without a TPU (JAX's compile-only devices; needs libtpu:
`pip install -e .[tpu]`), so activations and bf16 are counted as a TPU lays them out.
The mesh shape comes from `--config.mesh.{data,fsdp,model}`.
Nothing is allocated: the state is abstract and the step is compiled only.
"""

import jax
from absl import flags
from jax.experimental import topologies

from experiments import cli, launch
from unipinrec.bench.memory import GIB, format_plan, plan_memory
from unipinrec.config import from_mapping
from unipinrec.errors import UserInputError

_CONFIG = cli.define_config_file(
  "config", launch.DEFAULT_CONFIG, "ml_collections config file, optionally `file.py:variant`."
)
_DEVICES = flags.DEFINE_integer(
  "devices", 0, "Simulate this many CPU devices (e.g. 64 for a v5e-64); 0 uses the real ones."
)
_TOPOLOGY = flags.DEFINE_string(
  "topology", "", "Compile for this TPU slice without a TPU, e.g. v5e:8x8 (a v5e-64); needs libtpu."
)
_NUM_ITEMS = flags.DEFINE_integer(
  "num_items", None, "Catalogue size; default: the config's synthetic world's."
)
_NUM_OUTCOMES = flags.DEFINE_integer("num_outcomes", 2, "Outcome types (click, save).")
_NUM_SURFACES = flags.DEFINE_integer("num_surfaces", None, "Default: the synthetic world's.")
_SLATE_SIZE = flags.DEFINE_integer("slate_size", None, "Default: the synthetic world's.")
_DEVICE_MEMORY_GIB = flags.DEFINE_float(
  "device_memory_gib",
  0.0,
  "Memory of one device (v5e: 16, v5p: 95, H100: 80); 0 skips the verdict.",
)


def _tpu_devices(topology: str) -> list[jax.Device]:
  """The compile-only devices of a TPU slice; a missing libtpu or unknown name is the user's."""
  try:
    return topologies.get_topology_desc(topology, "tpu").devices
  except Exception as error:  # jax raises RuntimeError or JaxRuntimeError, libtpu varies
    detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    raise UserInputError(
      f"--topology={topology}: no TPU compiler for it ({detail}); it needs libtpu "
      "(pip install -e .[tpu]) and a name such as v5e:8x8"
    ) from error


def main(argv):
  del argv
  if _DEVICES.value and _TOPOLOGY.value:
    raise UserInputError("--devices and --topology: give one (simulated CPU devices or a TPU)")
  devices = _tpu_devices(_TOPOLOGY.value) if _TOPOLOGY.value else None
  if _DEVICES.value:
    # Before anything asks JAX for a device: the CPU backend is created with this many.
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", _DEVICES.value)
  run = from_mapping(_CONFIG.value.to_dict())
  world = run.data.synthetic
  plan = plan_memory(
    run,
    num_items=_NUM_ITEMS.value or world.num_items,
    num_outcomes=_NUM_OUTCOMES.value,
    num_surfaces=_NUM_SURFACES.value or world.num_surfaces,
    slate_size=_SLATE_SIZE.value or world.slate_size,
    devices=devices,
  )
  print(format_plan(plan, int(_DEVICE_MEMORY_GIB.value * GIB)))


if __name__ == "__main__":
  cli.run(main)
