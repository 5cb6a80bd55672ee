"""Train-step throughput: step time, XLA's FLOP count, and the share of a measured matmul peak.

Only the compiled step is timed. Batches come from the real input pipeline but
are built and placed on the devices before timing starts, so neither data
preparation nor the pipeline is in the figures. Compilation is timed apart.

FLOPs are XLA's own count for the compiled step (forward, backward and the
optimizer update), from `Compiled.cost_analysis()`. On a mesh of several
devices that program is one device's partition, so the count, the step rate
and the matmul peak (timed on the first device) are all per device. XLA counts
a loop's body once, so a step whose softmax runs in chunks
(`step.loss.chunk_anchors`) is credited with the FLOPs of the same step
unchunked: the model's arithmetic, without the chunks' recomputed logits. The
unchunked step also scores the anchors without a positive that the chunks skip
(a history's padding), so where histories are short the rate is overstated.

The peak is the best rate of a jitted float32 square matmul over a few sizes
(`unipinrec.bench.timing.matmul_peak_flops`), timed in the same process, so it sees
the same machine and the same load.

`benchmark_encoder` times the shared transformer alone (tokens in, states out,
forward and backward) on the same batches: the share of the peak that the
backbone reaches at that size on that backend, which the whole step, heads and
losses added, can be read against.

`time_transformer_matmuls` times the transformer's own matmul shapes alone at
a size (`transformer_matmul_shapes`): the best share of the peak that a single
product of that size reaches, a ceiling for any program built from them.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from unipinrec import sharding
from unipinrec.bench import timing
from unipinrec.data.pipeline import training_iterator
from unipinrec.model.config import ModelConfig
from unipinrec.train.experiment import Experiment
from unipinrec.train.loop import jit_train_step
from unipinrec.types import TrainBatch

# Distinct batches cycled through while timing: real data without holding every step's batch.
_NUM_BATCHES = 4


@dataclasses.dataclass(frozen=True)
class StepBenchmark:
  """The timing of one configuration's train step."""

  name: str
  batch_size: int
  max_length: int
  width: int  # embed_dim + action_dim, the transformer's width
  compile_seconds: float
  step_seconds: tuple[float, ...]  # every timed step, in order
  median_step_seconds: float
  sequences_per_second: float  # batch_size / median_step_seconds
  flops_per_step: float  # XLA's cost analysis of the compiled step
  flops_per_second: float  # flops_per_step / median_step_seconds
  peak_flops_per_second: float  # the float32 matmul peak it is compared with
  share_of_peak: float  # flops_per_second / peak_flops_per_second


def _batches(experiment: Experiment) -> list[TrainBatch]:
  """The first `_NUM_BATCHES` training batches, on the experiment's mesh."""
  run = experiment.run
  iterator = training_iterator(experiment.data.train_examples, run.batch_size, run.seed)
  return [
    TrainBatch(**sharding.global_batch(experiment.mesh, next(iterator), run.batch_size))
    for _ in range(_NUM_BATCHES)
  ]


def compiled_flops(compiled: jax.stages.Compiled) -> float:
  """XLA's FLOP count of a compiled computation.

  `cost_analysis()` is a dict in jax 0.10 and a list of dicts (one per
  module) in older releases; the modules' counts are summed.
  """
  analysis = compiled.cost_analysis()
  modules = analysis if isinstance(analysis, (list, tuple)) else [analysis]
  flops = sum(float(module.get("flops", 0.0)) for module in modules)
  if flops <= 0:
    raise ValueError(f"XLA's cost analysis reports no FLOPs: {analysis!r}")
  return flops


def benchmark_train_step(
  experiment: Experiment,
  name: str,
  peak_flops_per_second: float,
  steps: int = 30,
  warmup: int = 5,
) -> StepBenchmark:
  """Compiles the train step of `experiment`, then times `steps` steps after `warmup` ones.

  The experiment's initial state is donated to the first step, so it cannot be used after.

  Args:
    experiment: the data, model and state, from `setup_experiment`.
    name: the label of this configuration in logs and the result.
    peak_flops_per_second: the matmul peak the achieved rate is a share of.
    steps: timed steps; the median is reported.
    warmup: untimed steps run first, after compilation.
  """
  batches = _batches(experiment)
  item_log_frequency = jax.device_put(
    experiment.data.logq_log_frequency, sharding.replicated(experiment.mesh)
  )
  state = experiment.initial_state
  logging.info("%s: compiling the train step", name)
  start = time.perf_counter()
  compiled = jit_train_step(experiment).lower(state, batches[0], item_log_frequency).compile()
  compile_seconds = time.perf_counter() - start
  flops = compiled_flops(compiled)
  if experiment.run.step.loss.chunk_anchors:
    unchunked = jit_train_step(unchunked_experiment(experiment))
    flops = compiled_flops(unchunked.lower(state, batches[0], item_log_frequency).compile())
  logging.info("%s: compiled in %.1f s, %.3f GFLOP per step", name, compile_seconds, flops / 1e9)

  logging.info("%s: %d warm-up and %d timed steps", name, warmup, steps)
  step_seconds = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    # The state is donated, so each step consumes the previous step's output.
    state, metrics = compiled(state, batches[i % _NUM_BATCHES], item_log_frequency)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      step_seconds.append(time.perf_counter() - start)
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"{name}: non-finite loss after {warmup + steps} steps")
  return _result(name, experiment, compile_seconds, step_seconds, flops, peak_flops_per_second)


def unchunked_experiment(experiment: Experiment) -> Experiment:
  """The experiment with its softmax's logits all at once (`step.loss.chunk_anchors` 0)."""
  run = experiment.run
  loss = dataclasses.replace(run.step.loss, chunk_anchors=0)
  step = dataclasses.replace(run.step, loss=loss)
  return dataclasses.replace(experiment, run=dataclasses.replace(run, step=step))


def benchmark_encoder(
  experiment: Experiment,
  name: str,
  peak_flops_per_second: float,
  steps: int = 30,
  warmup: int = 5,
) -> StepBenchmark:
  """Times the shared transformer alone, forward and backward, on the train step's batches.

  The timed program is the gradient, with respect to all parameters, of the
  mean squared state of `UniPinRec.encode` (tokenizer and causal transformer,
  without dropout or MAM masking). No heads, losses or optimizer.
  Arguments and result as `benchmark_train_step`. It reads the initial state's
  parameters without consuming them, so it runs before `benchmark_train_step`.
  """
  model = experiment.model
  batches = _batches(experiment)

  def mean_squared_state(params, batch: TrainBatch) -> jax.Array:
    states, _ = model.apply(
      {"params": params},
      batch.items,
      batch.outcomes,
      batch.times,
      batch.surfaces,
      batch.history_lengths,
      method=model.encode,
    )
    return jnp.mean(jnp.square(states))

  params = experiment.initial_state.params
  start = time.perf_counter()
  compiled = jax.jit(jax.grad(mean_squared_state)).lower(params, batches[0]).compile()
  compile_seconds = time.perf_counter() - start
  flops = compiled_flops(compiled)
  logging.info("%s: compiled in %.1f s, %.3f GFLOP per call", name, compile_seconds, flops / 1e9)
  step_seconds = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, batches[i % _NUM_BATCHES]))
    if i >= warmup:
      step_seconds.append(time.perf_counter() - start)
  return _result(name, experiment, compile_seconds, step_seconds, flops, peak_flops_per_second)


def _result(
  name: str,
  experiment: Experiment,
  compile_seconds: float,
  step_seconds: Sequence[float],
  flops: float,
  peak_flops_per_second: float,
) -> StepBenchmark:
  """The figures of `step_seconds` timed calls of a program of `flops`, logged."""
  run = experiment.run
  median = statistics.median(step_seconds)
  achieved = flops / median
  result = StepBenchmark(
    name=name,
    batch_size=run.batch_size,
    max_length=run.model.max_length,
    width=run.model.embed_dim + run.model.action_dim,
    compile_seconds=compile_seconds,
    step_seconds=tuple(step_seconds),
    median_step_seconds=median,
    sequences_per_second=run.batch_size / median,
    flops_per_step=flops,
    flops_per_second=achieved,
    peak_flops_per_second=peak_flops_per_second,
    share_of_peak=achieved / peak_flops_per_second,
  )
  logging.info(
    "%s: median %.1f ms, %.0f sequences/s, %.2f GFLOP/s (%.1f%% of peak)",
    name,
    median * 1e3,
    result.sequences_per_second,
    achieved / 1e9,
    100 * result.share_of_peak,
  )
  return result


def format_table(results: Sequence[StepBenchmark]) -> str:
  """One line per configuration, with a header."""
  header = (
    f"{'size':<16} {'batch':>5} {'L':>4} {'width':>5} {'compile s':>9} {'step ms':>8} "
    f"{'seq/s':>8} {'GFLOP/step':>10} {'GFLOP/s':>8} {'peak GFLOP/s':>12} {'% peak':>7}"
  )
  lines = [header, "-" * len(header)]
  for r in results:
    lines.append(
      f"{r.name:<16} {r.batch_size:>5} {r.max_length:>4} {r.width:>5} "
      f"{r.compile_seconds:>9.1f} {r.median_step_seconds * 1e3:>8.1f} "
      f"{r.sequences_per_second:>8.0f} {r.flops_per_step / 1e9:>10.3f} "
      f"{r.flops_per_second / 1e9:>8.2f} {r.peak_flops_per_second / 1e9:>12.1f} "
      f"{100 * r.share_of_peak:>7.1f}"
    )
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class MatmulShape:
  """One of the transformer's matmul shapes, timed alone."""

  name: str
  lhs_shape: tuple[int, ...]
  rhs_shape: tuple[int, ...]
  flops_per_second: float
  share_of_peak: float


def transformer_matmul_shapes(
  config: ModelConfig, batch_size: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
  """The (lhs, rhs) shapes of the shared transformer's products over one training batch.

  Batch B, history L, width W, H heads of Dh, feed-forward F: the projections
  multiply all B L tokens at once, the attention one [L, Dh] block per sequence and head.
  """
  tokens, heads = batch_size * config.max_length, batch_size * config.num_heads
  length, width, head = config.max_length, config.width, config.head_dim
  return {
    "qkv projection": ((tokens, width), (width, 3 * config.num_heads * head)),
    "attention logits": ((heads, length, head), (heads, head, length)),
    "attention values": ((heads, length, length), (heads, length, head)),
    "feed-forward in": ((tokens, width), (width, config.mlp_dim)),
  }


def time_transformer_matmuls(
  experiment: Experiment, peak_flops_per_second: float, warmup: int = 2, repeats: int = 10
) -> list[MatmulShape]:
  """Each of `transformer_matmul_shapes` timed alone on the default device, against the peak."""
  results = []
  shapes = transformer_matmul_shapes(experiment.model.config, experiment.run.batch_size)
  for name, (lhs, rhs) in shapes.items():
    rate = timing.matmul_flops(lhs, rhs, warmup, repeats)
    results.append(MatmulShape(name, lhs, rhs, rate, rate / peak_flops_per_second))
  return results


def format_matmul_table(size: str, shapes: Sequence[MatmulShape]) -> str:
  """One line per matmul shape of a size, with a header."""
  header = f"{size + ' matmuls':<22} {'lhs x rhs':<30} {'GFLOP/s':>8} {'% peak':>7}"
  lines = [header, "-" * len(header)]
  for m in shapes:
    product = f"{'x'.join(map(str, m.lhs_shape))} @ {'x'.join(map(str, m.rhs_shape))}"
    lines.append(
      f"{m.name:<22} {product:<30} {m.flops_per_second / 1e9:>8.2f} {100 * m.share_of_peak:>7.1f}"
    )
  return "\n".join(lines)
