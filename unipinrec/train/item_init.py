"""A warm start for the item table: rows from the items' co-occurrence in the training logs.

From a random table, training on the synthetic default spends its first ~800
of 1,800 steps on a plateau (the retrieval loss flat near 8, the ranking loss
near 0.40) until the item rows organise into topics, a third of the run's
budget on 2 CPU cores. Rows from a truncated SVD of the items' positive
pointwise mutual information (items acted on within `window` actions of each
other, training users only) start organised: the same geometry the model
would find, given before the first step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from unipinrec.config import ItemInitConfig
from unipinrec.train.state import TrainState
from unipinrec.types import UserLogs


def cooccurrence_vectors(
  sequences: Sequence[np.ndarray], num_items: int, dim: int, window: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Item vectors from the PPMI of items acted on within `window` actions of each other.

  Args:
    sequences: each user's item ids (1..N) in time order.
    num_items: N.
    dim: width of the vectors (at most N - 1).
    window: the largest distance, in actions, of a co-occurring pair.
    seed: the SVD's start vector (ARPACK draws one otherwise).

  Returns:
    ([N + 1, dim] float64 vectors U * sqrt(S), [N + 1] bool: the item co-occurs
    with something, so its row means anything).
  """
  firsts, seconds = [], []
  for items in sequences:
    items = np.asarray(items, np.int64)
    for distance in range(1, window + 1):
      firsts.append(items[:-distance])
      seconds.append(items[distance:])
  first, second = np.concatenate(firsts), np.concatenate(seconds)
  keep = first != second
  first, second = first[keep], second[keep]
  size = num_items + 1
  counts = scipy.sparse.coo_matrix(
    (np.ones(len(first)), (first, second)), shape=(size, size)
  ).tocsr()
  counts = (counts + counts.T).tocoo()
  marginals = np.asarray(counts.sum(axis=1)).ravel()
  total = counts.data.sum()
  pmi = np.log(counts.data * total / (marginals[counts.row] * marginals[counts.col]))
  positive = pmi > 0
  ppmi = scipy.sparse.csr_matrix(
    (pmi[positive], (counts.row[positive], counts.col[positive])), shape=(size, size)
  )
  start = np.random.default_rng(seed).standard_normal(size)
  left, singular, _ = scipy.sparse.linalg.svds(ppmi, k=dim, v0=start)
  return left * np.sqrt(singular), marginals > 0


def training_sequences(logs: UserLogs, users: np.ndarray) -> list[np.ndarray]:
  """Each of `users`' item ids in time order."""
  return [logs.action_items[logs.action_offsets[u] : logs.action_offsets[u + 1]] for u in users]


def scaled_vectors(
  sequences: Sequence[np.ndarray], num_items: int, dim: int, config: ItemInitConfig
) -> tuple[np.ndarray, np.ndarray]:
  """The co-occurrence vectors at the random draw's row scale, and which of them to use.

  Returns:
    ([N + 1, dim] float64 vectors whose used rows have mean norm stddev * sqrt(dim), [N + 1]
    bool: the item co-occurs with something in `sequences`, row 0 (padding) excluded).
  """
  vectors, seen = cooccurrence_vectors(sequences, num_items, dim, config.window, config.seed)
  # Rows at the random draw's scale: the learning rates were tuned for it.
  vectors *= config.stddev * np.sqrt(dim) / np.mean(np.linalg.norm(vectors[seen], axis=1))
  seen[0] = False
  return vectors, seen


def initial_table(
  logs: UserLogs, users: np.ndarray, rows: int, dim: int, config: ItemInitConfig
) -> np.ndarray:
  """[rows, dim] float32 item table: co-occurrence rows for the items `users` acted on.

  Items no training user acted on, and row 0 (padding), keep a normal(stddev)
  row; the rows past N stay zero, as in the random table.
  """
  num_items = logs.num_items
  sequences = training_sequences(logs, users)
  vectors, seen = scaled_vectors(sequences, num_items, dim, config)
  rng = np.random.default_rng(config.seed)
  table = np.zeros((rows, dim), np.float32)
  table[: num_items + 1] = rng.normal(0.0, config.stddev, (num_items + 1, dim))
  table[: num_items + 1][seen] = vectors[seen]
  return table


def place_item_tables(state: TrainState, tables: Mapping[str, np.ndarray]) -> TrainState:
  """The state with tokenizer tables (the item table, the item features) replaced, each in its
  own sharding.

  Every process passes the same arrays (they are computed from the same logs), and each device
  takes its block of them. A table with fewer rows than the parameter fills its first rows and
  leaves the rest zero (the padding rows past the catalogue).
  """
  tokenizer = dict(state.params["tokenizer"])
  for name, table in tables.items():
    current = tokenizer[name]
    if table.shape[1:] != current.shape[1:] or len(table) > len(current):
      raise ValueError(f"{name} {table.shape} does not fit the model's {current.shape}")
    full = np.zeros(current.shape, current.dtype)
    full[: len(table)] = table
    tokenizer[name] = jax.make_array_from_callback(
      current.shape, current.sharding, lambda index, full=full: full[index]
    )
  return state.replace(params={**state.params, "tokenizer": tokenizer})
