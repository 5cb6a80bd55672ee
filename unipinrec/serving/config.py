"""Serving settings, as a frozen dataclass (the run config's `serving` block)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ServingConfig:
  """How many items are retrieved, ranked and returned, and how users are batched."""

  num_candidates: int = 256  # K: items retrieved from the index and ranked per user
  num_results: int = 20  # ranked items returned per user
  batch_size: int = 32  # users per compiled call; the last batch is padded to it
  merge_cosine: float = 0.98  # budgets: outcome queries this close share one search
  view: bool = True  # memory-map the index files instead of reading them into memory
