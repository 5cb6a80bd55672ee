"""A few train steps of a tiny model on a given mesh; run as a script on 8 fake CPU devices.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_run.py OUT_DIR

writes, for each mesh of `MESHES`, OUT_DIR/<name>.npz (losses and updated
parameters) and OUT_DIR/<name>.json (where the item table lives). test_sharding.py
imports `train_steps` to run the same steps on one device and compares.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np

from unipinrec import sharding
from unipinrec.bench import memory
from unipinrec.config import OptimizerConfig, StepConfig
from unipinrec.losses import LossConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train import partition
from unipinrec.train.state import example_batch, make_optimizer
from unipinrec.types import TrainBatch

# (data, fsdp, model) on 8 devices: pure data parallel, all three axes, FSDP with tensor parallel.
MESHES = {"8x1x1": (8, 1, 1), "2x2x2": (2, 2, 2), "1x4x2": (1, 4, 2)}
# About half the compile time on CPU; the runs are compared with a tolerance anyway.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
NUM_STEPS = 3
BATCH, SLATES, SLATE_SIZE = 8, 2, 3
MODEL = ModelConfig(
  num_items=50,
  num_outcomes=2,
  num_surfaces=2,
  max_length=8,
  embed_dim=16,
  action_dim=8,
  num_layers=1,
  num_heads=2,
  mlp_dim=32,
  head_hidden_dim=16,
  item_table_multiple=64,
  item_bias=True,  # a second vocabulary-split parameter, beside the table,
  dropout_rate=0.0,
  offsets_seconds=(0.0,),
  relative_position_buckets=0,
  exclusive_outcomes=False,
)


def random_batch(seed: int) -> dict[str, np.ndarray]:
  """A valid blended batch of `BATCH` examples, drawn from `seed`."""
  rng = np.random.default_rng(seed)
  b, length, o = BATCH, MODEL.max_length, MODEL.num_outcomes
  lengths = rng.integers(2, length + 1, b)
  valid = np.arange(length)[None, :] < lengths[:, None]
  return {
    "items": np.where(valid, rng.integers(1, MODEL.num_items + 1, (b, length)), 0).astype(np.int32),
    "outcomes": rng.random((b, length, o)) < 0.3,
    "times": np.cumsum(rng.exponential(3600.0, (b, length)), axis=1).astype(np.float32),
    "surfaces": rng.integers(0, MODEL.num_surfaces, (b, length)).astype(np.int32),
    "history_lengths": lengths.astype(np.int32),
    "slate_prefix": rng.integers(1, 3, (b, SLATES)).astype(np.int32),
    "slate_times": rng.random((b, SLATES)).astype(np.float32) * 3600.0,
    "slate_surfaces": rng.integers(0, MODEL.num_surfaces, (b, SLATES)).astype(np.int32),
    "slate_items": rng.integers(1, MODEL.num_items + 1, (b, SLATES, SLATE_SIZE)).astype(np.int32),
    "slate_outcomes": rng.random((b, SLATES, SLATE_SIZE, o)) < 0.3,
  }


def train_steps(mesh: jax.sharding.Mesh) -> tuple[dict[str, np.ndarray], dict]:
  """`NUM_STEPS` steps from the same initial state and batches on `mesh`.

  Returns:
    (losses and updated parameters as flat arrays, facts about the shardings).
  """
  model = UniPinRec(MODEL)
  # The tolerances below were set at this rate and these loss weights (the rounding noise of the
  # key bias's zero gradient grows with them).
  optimizer = make_optimizer(OptimizerConfig(learning_rate=5e-4, warmup_steps=1), num_steps=10)
  loss = LossConfig(
    num_random_negatives=16,
    num_inbatch_negatives=16,
    mam_weight=1.0,
    ranking_weight=1.0,
    offset_window_seconds=0.0,
    offset_logq_strength=1.0,
    chunk_anchors=8,  # with the batch's shards as groups (`chunked_softmax`)
  )
  step_config = StepConfig(loss=loss)
  example = example_batch(model, BATCH, SLATES, SLATE_SIZE)
  state, shardings = partition.create_sharded_state(
    model, optimizer, mesh, jax.random.key(0), example
  )
  step_fn = partition.jit_train_step(model, optimizer, step_config, 1, mesh, shardings)
  frequency = np.log(np.full(MODEL.num_items + 1, 1.0 / MODEL.num_items, np.float32))
  batches = [
    TrainBatch(**sharding.global_batch(mesh, random_batch(seed), BATCH))
    for seed in range(NUM_STEPS)
  ]
  compiled = step_fn.lower(state, batches[0], frequency).compile(FAST_COMPILE)
  table = state.params["tokenizer"]["item_embedding"]
  facts = {
    "table_spec": repr(table.sharding.spec),
    "table_shard_rows": sorted({s.data.shape[0] for s in table.addressable_shards}),
    "table_devices": len(table.sharding.device_set),
    "table_device_bytes": memory.device_bytes(table),
    "table_moment_specs": sorted(
      {
        repr(leaf.sharding.spec)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
        if "item_embedding" in jax.tree_util.keystr(path)
      }
    ),
    "compiled_table_spec": repr(
      compiled.input_shardings[0][0].params["tokenizer"]["item_embedding"].spec
    ),
    "bias_spec": repr(state.params["tokenizer"]["item_bias"].sharding.spec),
    "mlp_kernel_spec": repr(
      state.params["transformer"]["block_0"]["mlp_in"]["kernel"].sharding.spec
    ),
  }
  losses = []
  for i, batch in enumerate(batches):
    state, metrics = compiled(state, batch, frequency)
    if i == 0:
      facts["donated_table_deleted"] = table.is_deleted()
    losses.append(float(metrics["loss"]))
  flat = {
    jax.tree_util.keystr(path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
  }
  return {"losses": np.asarray(losses), **flat}, facts


def main(out_dir: str) -> None:
  out = pathlib.Path(out_dir)
  assert len(jax.devices()) == 8, jax.devices()
  for name, shape in MESHES.items():
    arrays, facts = train_steps(sharding.make_mesh(sharding.MeshConfig(*shape)))
    np.savez(out / f"{name}.npz", **arrays)
    (out / f"{name}.json").write_text(json.dumps(facts))


if __name__ == "__main__":
  main(sys.argv[1])
