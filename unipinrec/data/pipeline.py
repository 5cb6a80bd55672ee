"""The grain input pipeline over in-memory blended examples.

Shuffling, repetition and per-process parts of each batch are grain's; the
iterator's state is a small dict that goes into the same checkpoint as the
train state, so a resumed run continues with exactly the same batches, on
the same or another number of processes.
"""

from __future__ import annotations

from collections.abc import Mapping

import grain
import numpy as np

_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=32)


class ExampleSource(grain.sources.RandomAccessDataSource):
  """Random access to row `i` of stacked example arrays."""

  def __init__(self, examples: Mapping[str, np.ndarray]):
    self._examples = dict(examples)
    self._length = len(next(iter(self._examples.values())))

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in self._examples.items()}


def training_iterator(
  examples: Mapping[str, np.ndarray],
  global_batch_size: int,
  seed: int,
  shard: tuple[int, int] = (0, 1),
) -> grain.DatasetIterator:
  """An endless, shuffled iterator of this process's part of each global batch.

  Every process shuffles the same way and cuts the stream into parts of
  `global_batch_size / count` examples; global batch j is parts j * count to
  j * count + count - 1, and this process reads part `index` of each. So
  the global batches are the same, row for row, on any number of processes,
  and the iterator's state (the index of the next batch) is the same in
  every process: it restores onto another process count.

  Args:
    examples: stacked example arrays, one row per example.
    global_batch_size: examples per step over all processes.
    seed: the shuffle's seed.
    shard: (index, count), this process's part of each batch
      (`sharding.process_batch_shard`); (0, 1) reads whole batches.
  """
  index, count = shard
  if global_batch_size % count:
    raise ValueError(f"batch_size {global_batch_size} is not divisible into {count} parts")
  dataset = grain.MapDataset.source(ExampleSource(examples)).shuffle(seed=seed).repeat()
  dataset = dataset.batch(global_batch_size // count, drop_remainder=True)[index::count]
  # The examples are in memory: a few batches ahead keep up with the step, while grain's
  # default (16 threads, 500 batches) takes the cores from the compiler at start-up.
  return iter(dataset.to_iter_dataset(_READ_OPTIONS))
