"""The grain input pipeline over in-memory blended examples.

Shuffling, repetition and per-process sharding are grain's; the iterator's
state is a small dict that goes into the same checkpoint as the train state,
so a resumed run continues with exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Mapping

import grain
import jax
import numpy as np


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
  examples: Mapping[str, np.ndarray], global_batch_size: int, seed: int
) -> grain.DatasetIterator:
  """An endless, shuffled iterator of this process's share of each global batch.

  Every process shuffles the same way and keeps every `process_count`-th
  example, so the processes' batches together form the global batch.
  """
  process_count = jax.process_count()
  if global_batch_size % process_count:
    raise ValueError(
      f"batch_size {global_batch_size} is not divisible by {process_count} processes"
    )
  dataset = grain.MapDataset.source(ExampleSource(examples)).shuffle(seed=seed).repeat()
  dataset = dataset[jax.process_index() :: process_count]
  dataset = dataset.batch(global_batch_size // process_count, drop_remainder=True)
  return iter(dataset.to_iter_dataset())
