"""Items of a synthetic catalogue too large for tables: each item's truth computed from its id.

A world of 10^8 items cannot hold [N, D] vectors (12.8 GB in float32 at D = 32), so here an
item is a pure function of its id and a few small arrays: its subtopic is `(id - 1) % G`,
its popularity rank `id` (Zipf), its offset from the subtopic centre and its quality are
Gaussians drawn by hashing the id (a counter-based generator: any item, in any order, on the
host or inside a jitted step). Content vectors follow `synthetic_items.content_vectors`:
`[vector, quality] @ P` plus noise. The same functions run in NumPy (`xp=np`, the world) and
JAX (`xp=jnp`, the item encoder), so the model reads exactly the content the world drew.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from unipinrec.hashing import GOLDEN, mix32

_TWO_PI = 2.0 * math.pi
# Per-item draws: streams of the id hash, so each quantity is independent of the others.
_OFFSET_STREAM, _QUALITY_STREAM, _CONTENT_STREAM = 0, 1, 2
_SCALE_SAMPLE = 4096  # items whose content sets the noise scale (deterministic: ids 1..4096)


def _uniforms(ids, seed, stream: int, width: int, xp) -> Any:
  """[...] ids -> [..., width] float32 uniforms in (0, 1), a pure function of (seed, stream,
  id, column); `seed` may be a traced scalar (a model's stored generator)."""
  offset = np.uint32((stream * GOLDEN + 0x165667B1) % 2**32)
  # Shape [1], not a scalar: NumPy warns on wrapping scalar arithmetic, never on arrays'.
  key = xp.asarray(seed).astype(xp.uint32).reshape(1) * xp.uint32(0x27D4EB2F) + xp.uint32(offset)
  columns = (np.arange(width, dtype=np.uint64) * 0x61C88647 % 2**32).astype(np.uint32)
  ids = xp.asarray(ids).astype(xp.uint32)[..., None]
  bits = mix32(mix32(ids ^ key, xp) + xp.asarray(columns), xp)
  # The top 24 bits, centred in their cell: never 0 or 1, exact in float32.
  return ((bits >> 8).astype(xp.float32) + 0.5) / xp.float32(2**24)


def gaussians(ids, seed, stream: int, width: int, xp=np) -> Any:
  """[...] ids -> [..., width] float32 standard normals (Box-Muller on hashed uniforms)."""
  radius = xp.sqrt(-2.0 * xp.log(_uniforms(ids, seed, 2 * stream, width, xp)))
  angle = _TWO_PI * _uniforms(ids, seed, 2 * stream + 1, width, xp)
  return radius * xp.cos(angle)


@dataclasses.dataclass(frozen=True)
class ItemGenerator:
  """Everything an item's truth and content are computed from (a few KiB whatever N is)."""

  num_items: int  # N, ids 1..N
  seed: int
  centres: np.ndarray  # [G, D] float32 unit subtopic centres
  item_noise: float  # spread of an item around its subtopic centre
  zipf_exponent: float  # popularity of rank r is r ** -zipf_exponent; an item's rank is its id
  content_map: np.ndarray  # [D + 1, C] float32 (C = 0: no content)
  content_scale: float  # the content noise's standard deviation per coordinate

  def __post_init__(self):
    if not 0 <= self.seed < 2**24:  # `arrays()` stores it as float32, exact below 2^24
      raise ValueError(f"an item generator's seed must be in [0, 2^24), got {self.seed}")

  @property
  def num_subtopics(self) -> int:
    """G, the subtopic centres items cluster around."""
    return len(self.centres)

  @property
  def content_dim(self) -> int:
    """C, the width of the content vectors (0: none)."""
    return self.content_map.shape[1]

  def arrays(self) -> dict[str, np.ndarray]:
    """The generator as arrays: what a model stores to compute content itself
    (`content_from_arrays`)."""
    scalars = [self.seed, self.item_noise, self.content_scale]
    return {
      "centres": self.centres,
      "content_map": self.content_map,
      "scalars": np.asarray(scalars, np.float32),
    }


def log_popularity(generator: ItemGenerator, ids: np.ndarray) -> np.ndarray:
  """[...] ids -> float64 log popularity, centred over items 1..N (0 for the padding id 0)."""
  ids = np.asarray(ids)
  num_n = generator.num_items
  # Mean of log r over r = 1..N by Stirling: log N - 1 + log(2 pi N) / (2 N).
  mean_log = math.log(num_n) - 1.0 + math.log(_TWO_PI * num_n) / (2 * num_n)
  centred = -generator.zipf_exponent * (np.log(np.maximum(ids, 1)) - mean_log)
  return np.where(ids > 0, centred, 0.0)


def _vectors(ids, centres, seed, item_noise, xp) -> Any:
  dim = centres.shape[1]
  sub = (xp.asarray(ids) - 1) % centres.shape[0]
  noise = item_noise * gaussians(ids, seed, _OFFSET_STREAM, dim, xp) / math.sqrt(dim)
  moved = centres[sub] + noise
  unit = moved / xp.maximum(xp.linalg.norm(moved, axis=-1, keepdims=True), 1e-12)
  return xp.where((xp.asarray(ids) > 0)[..., None], unit, 0.0)


def _quality(ids, seed, xp) -> Any:
  quality = gaussians(ids, seed, _QUALITY_STREAM, 1, xp)[..., 0]
  return xp.where(xp.asarray(ids) > 0, quality, 0.0)


def vectors(generator: ItemGenerator, ids) -> np.ndarray:
  """[...] ids -> [..., D] float32 unit item vectors (zeros for the padding id 0)."""
  return _vectors(ids, generator.centres, generator.seed, generator.item_noise, np)


def quality(generator: ItemGenerator, ids) -> np.ndarray:
  """[...] ids -> [...] float32 standard-normal quality (0 for the padding id 0)."""
  return _quality(ids, generator.seed, np)


def content_from_arrays(ids, arrays: dict[str, Any], xp=np) -> Any:
  """[...] ids -> [..., C] float32 content, from `ItemGenerator.arrays()` (NumPy or JAX).

  The signal is `[vector, quality] @ P / sqrt(C)`; the noise is Gaussian with the generator's
  scale. The padding id 0 gets zeros.
  """
  seed, item_noise, scale = (arrays["scalars"][i] for i in range(3))
  content_map = arrays["content_map"]
  width = content_map.shape[1]
  truth = xp.concatenate(
    [_vectors(ids, arrays["centres"], seed, item_noise, xp), _quality(ids, seed, xp)[..., None]],
    axis=-1,
  )
  signal = truth @ content_map / math.sqrt(width)
  noisy = signal + scale * gaussians(ids, seed, _CONTENT_STREAM, width, xp)
  return xp.where((xp.asarray(ids) > 0)[..., None], noisy, 0.0).astype(xp.float32)


def content_signal_rms(generator: ItemGenerator) -> float:
  """The content signal's root mean square per coordinate over the fixed sample of items
  1..min(N, 4096): what a noise-to-signal ratio scales (`synthetic_items.content_vectors`)."""
  ids = np.arange(1, min(generator.num_items, _SCALE_SAMPLE) + 1)
  exact = dataclasses.replace(generator, content_scale=0.0)
  return float(np.sqrt(np.mean(content_from_arrays(ids, exact.arrays()) ** 2)))
