"""The train-step and encoder benchmarks at the runlocal size: figures follow from the timings;
the sizes of `experiments.bench_train`."""

import statistics

import pytest
from absl import app

from experiments import bench_train
from experiments.configs import ml100k, synthetic
from unipinrec import benchmark, sharding, timing
from unipinrec.config import from_mapping
from unipinrec.data.pipeline import training_iterator
from unipinrec.experiment import setup_experiment
from unipinrec.types import TrainBatch


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
      .lower(experiment.initial_state, batch, experiment.data.item_log_frequency)
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


def test_ml100k_size_is_the_ml100k_config_at_sasrec_dimensions(tmp_path):
  config = bench_train.size_config("ml100k", str(tmp_path))
  sasrec = bench_train.size_config("sasrec")
  expected = ml100k.get_config()
  assert config.batch_size == sasrec.batch_size == 128
  for field in ("max_length", "embed_dim", "action_dim", "num_layers", "num_heads"):
    assert config.model[field] == sasrec.model[field], field
  assert config.model.mlp_dim == sasrec.model.mlp_dim == 50
  # Everything but the dimensions is the ml-100k config's: its loss and data, not the synthetic's.
  assert config.step.loss.full_softmax == expected.step.loss.full_softmax is True
  assert config.data.source == "movielens" and config.data.path == str(tmp_path)
  with pytest.raises(app.UsageError, match="no ml-100k folder at .*missing"):
    bench_train.size_config("ml100k", str(tmp_path / "missing"))
