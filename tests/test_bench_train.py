"""The train-step and encoder benchmarks at the runlocal size: figures follow from the timings;
the sizes of `experiments.bench_train`."""

import dataclasses
import statistics

import pytest

from experiments import bench_train
from experiments.configs import ml100k, synthetic
from unipinrec import sharding
from unipinrec.bench import timing
from unipinrec.bench import train_step as benchmark
from unipinrec.config import from_mapping
from unipinrec.data.pipeline import training_iterator
from unipinrec.errors import MissingPathError
from unipinrec.model.config import ModelConfig
from unipinrec.train.experiment import setup_experiment
from unipinrec.types import TrainBatch


@pytest.mark.slow
def test_benchmark_figures_are_consistent():
  experiment = setup_experiment(from_mapping(synthetic.get_config("runlocal").to_dict()))
  run = experiment.run
  host_batch = next(training_iterator(experiment.data.train_examples, run.batch_size, run.seed))
  batch = TrainBatch(**sharding.global_batch(experiment.mesh, host_batch, run.batch_size))
  assert run.step.loss.chunk_anchors > 0  # the default's softmax runs in chunks

  def xla_flops(experiment):
    """XLA's own figure for the program, compiled here before the benchmark donates the state."""
    analysis = (
      benchmark.jit_train_step(experiment)
      .lower(experiment.initial_state, batch, experiment.data.logq_log_frequency)
      .compile()
      .cost_analysis()
    )
    return sum(m["flops"] for m in (analysis if isinstance(analysis, list) else [analysis]))

  # XLA counts the chunks' loop body once, so the step is credited with the unchunked count.
  expected_flops = xla_flops(benchmark.unchunked_experiment(experiment))

  rates = timing.matmul_peak_flops(sizes=(128, 256), warmup=1, repeats=3)
  peak = max(rates.values())
  # The encoder alone first: it reads the state that the train step then consumes.
  encoder = benchmark.benchmark_encoder(experiment, "runlocal encoder", peak, steps=3, warmup=1)
  result = benchmark.benchmark_train_step(experiment, "runlocal", peak, steps=3, warmup=1)

  assert expected_flops > 0
  assert result.flops_per_step == pytest.approx(expected_flops, rel=1e-6)
  assert len(result.step_seconds) == 3
  assert result.median_step_seconds == statistics.median(result.step_seconds)
  assert result.sequences_per_second == pytest.approx(
    result.batch_size / result.median_step_seconds
  )
  assert peak > 0 and result.peak_flops_per_second == peak
  assert result.flops_per_second == pytest.approx(
    result.flops_per_step / result.median_step_seconds
  )
  assert result.share_of_peak == pytest.approx(result.flops_per_second / peak)
  assert "runlocal" in benchmark.format_table([result])

  # The encoder is one part of the step's forward and backward pass: fewer FLOPs, same shapes.
  assert 0 < encoder.flops_per_step < result.flops_per_step
  assert len(encoder.step_seconds) == 3
  assert (encoder.batch_size, encoder.max_length, encoder.width) == (
    result.batch_size,
    result.max_length,
    result.width,
  )
  assert encoder.share_of_peak == pytest.approx(
    encoder.flops_per_step / encoder.median_step_seconds / peak
  )

  matmuls = benchmark.time_transformer_matmuls(experiment, peak, warmup=1, repeats=2)
  assert [m.name for m in matmuls] == list(
    benchmark.transformer_matmul_shapes(experiment.model.config, run.batch_size)
  )
  for m in matmuls:
    assert m.flops_per_second > 0 and m.share_of_peak == pytest.approx(m.flops_per_second / peak)
  assert "attention logits" in benchmark.format_matmul_table("runlocal", matmuls)


def test_transformer_matmul_shapes_at_sasrec_size():
  config = ModelConfig(
    num_items=10,
    num_outcomes=2,
    max_length=200,
    embed_dim=40,
    action_dim=10,
    num_heads=1,
    mlp_dim=50,
    dropout_rate=0.0,
    offsets_seconds=(0.0,),
    relative_position_buckets=0,
    exclusive_outcomes=False,
  )
  # Batch 128 of 200 actions, width 50 in one head: 25,600 tokens, 128 [200, 50] blocks.
  assert benchmark.transformer_matmul_shapes(config, 128) == {
    "qkv projection": ((25600, 50), (50, 150)),
    "attention logits": ((128, 200, 50), (128, 50, 200)),
    "attention values": ((128, 200, 200), (128, 200, 50)),
    "feed-forward in": ((25600, 50), (50, 50)),
  }
  two_heads = dataclasses.replace(config, num_heads=2)
  assert benchmark.transformer_matmul_shapes(two_heads, 4)["attention logits"] == (
    (8, 200, 25),
    (8, 25, 200),
  )


def test_matmul_flops_counts_two_flops_per_multiply_add(monkeypatch):
  monkeypatch.setattr(timing, "call_seconds", lambda *args: [0.5, 0.25, 2.0])
  # The median of the three times, 0.5 s: 2 B M K N FLOPs over it.
  assert timing.matmul_flops((3, 4, 5), (3, 5, 6), 0, 3) == 2 * 3 * 4 * 5 * 6 / 0.5
  assert timing.matmul_flops((4, 5), (5, 6), 0, 3) == 2 * 4 * 5 * 6 / 0.5
  assert timing.matmul_peak_flops(sizes=(8,)) == {8: 2 * 8**3 / 0.5}
  with pytest.raises(ValueError, match=r"shapes \(4, 5\) and \(4, 6\) do not multiply"):
    timing.matmul_flops((4, 5), (4, 6))


def test_ml100k_size_is_the_ml100k_config_at_sasrec_dimensions(tmp_path):
  config = bench_train.size_config("ml100k", str(tmp_path))
  sasrec = bench_train.size_config("sasrec")
  expected = ml100k.get_config()
  assert config.batch_size == sasrec.batch_size == 128
  for field in ("max_length", "embed_dim", "action_dim", "num_layers", "num_heads"):
    assert config.model[field] == sasrec.model[field], field
  assert config.model.mlp_dim == sasrec.model.mlp_dim == 50
  # Everything but the dimensions is the ml-100k config's: its loss and data, not the synthetic's.
  assert config.step.loss.softmax == expected.step.loss.softmax == "auto"
  assert config.data.source == "movielens" and config.data.path == str(tmp_path)
  with pytest.raises(MissingPathError, match="no ml-100k folder at .*missing"):
    bench_train.size_config("ml100k", str(tmp_path / "missing"))
