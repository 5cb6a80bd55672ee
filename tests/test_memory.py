"""The memory plan: per-device bytes from the shardings agree with XLA's count of the step."""

import dataclasses
from types import SimpleNamespace

import jax
import pytest

from experiments.configs import synthetic
from unipinrec.bench import memory
from unipinrec.config import from_mapping
from unipinrec.train.state import example_batch


def _plan(dtype: str = "float32") -> memory.MemoryPlan:
  config = synthetic.get_config("runlocal")
  config.model.num_layers = 1
  config.model.dtype = dtype
  return memory.plan_memory(
    from_mapping(config.to_dict()), num_items=600, num_outcomes=2, num_surfaces=3, slate_size=10
  )


@pytest.fixture(scope="module")
def plan():
  return _plan()


def test_state_bytes_follow_from_the_shapes(plan):
  # 601 rows padded to 1024, 16 wide, float32, all on the one device.
  assert plan.item_table_bytes == 1024 * 16 * 4
  assert plan.params_bytes > plan.item_table_bytes
  # Adam's two moments per parameter, plus a few int32 step counters.
  assert 2 * plan.params_bytes <= plan.optimizer_bytes <= 2 * plan.params_bytes + 64
  model = SimpleNamespace(config=SimpleNamespace(max_length=16, num_outcomes=2))
  batch_bytes = sum(x.nbytes for x in jax.tree.leaves(example_batch(model, 8, 4, 10)))
  assert plan.inputs_bytes == batch_bytes + 601 * 4  # and the item log-frequencies


def test_compiled_step_counts_the_same_state_and_reuses_it(plan):
  state = plan.params_bytes + plan.optimizer_bytes + 4  # and the int32 step
  assert plan.compiled_argument_bytes == state + plan.inputs_bytes
  # The donated state is written in place: every state byte of the output is aliased.
  assert plan.compiled_alias_bytes == state
  assert 0 < plan.compiled_output_bytes - plan.compiled_alias_bytes < 4096  # the metrics
  assert plan.compiled_temp_bytes > 0
  assert plan.peak_bytes == (
    plan.compiled_argument_bytes + plan.compiled_output_bytes - state + plan.compiled_temp_bytes
  )


def test_format_says_whether_it_fits(plan):
  assert "(1 cpu devices)" in memory.format_plan(plan)
  assert "fits in 1.0 GiB" in memory.format_plan(plan, memory.GIB)
  assert "does NOT fit in 0.0 GiB" in memory.format_plan(plan, 1024)
  assert "fit" not in memory.format_plan(plan)


def test_format_gives_a_refusing_compilers_reason(plan):
  refused = dataclasses.replace(
    plan, device_kind="TPU v5 lite", compiler_refusal="RESOURCE_EXHAUSTED: Ran out of memory"
  )
  text = memory.format_plan(refused, memory.GIB)
  assert "does NOT fit: the TPU v5 lite compiler: RESOURCE_EXHAUSTED: Ran out" in text
  assert "optimizer state" in text and "compiled" not in text and "fits in" not in text


@pytest.mark.slow  # a second compile of the step
def test_bf16_plan_keeps_float32_state(plan):
  bf16 = _plan("bfloat16")
  assert "compute bfloat16" in memory.format_plan(bf16)
  # Only activations change dtype: parameters, Adam moments and inputs are float32 as before.
  assert (bf16.params_bytes, bf16.optimizer_bytes, bf16.inputs_bytes) == (
    plan.params_bytes,
    plan.optimizer_bytes,
    plan.inputs_bytes,
  )
