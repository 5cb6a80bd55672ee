"""The synthetic world's items: their truth, the noisy content a model may read, the cold ones.

An item's truth is its unit vector among the topics, its popularity and its quality. With
`content_dim` > 0 each item also carries a content vector: a fixed random linear map of
`[vector, quality]` plus Gaussian noise, so features say roughly, never exactly, what an item
is. With `cold_item_fraction` > 0 a seeded share of the items is cold: shown only to the users
allowed to see them (the held-out ones), so training never meets them. Content and cold items
draw from streams of their own, so turning either on leaves every other draw of the world as is.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from unipinrec.data.item_features import ItemFeatures

# Children of the world's seed (`SeedSequence.spawn_key`); 0 is the returns' stream.
_CONTENT_STREAM = 1
_COLD_STREAM = 2


class ItemSettings(Protocol):
  """The `SyntheticConfig` fields items read (synthetic.py imports this module, not back)."""

  seed: int  # seeds every random draw
  num_items: int  # catalogue size N
  num_topics: int  # topic centres T
  latent_dim: int  # width D of item vectors
  subtopics_per_topic: int  # clusters inside each topic
  subtopic_noise: float  # subtopic centre spread around its topic centre
  item_noise: float  # item spread around its subtopic centre
  zipf_exponent: float  # popularity of rank r is r ** -zipf_exponent
  content_dim: int  # width of the content vectors (0: none)
  content_noise: float  # the content's noise-to-signal ratio of norms
  cold_item_fraction: float  # share of items 1..N held out of training


def normalize(x: np.ndarray) -> np.ndarray:
  """Rows of `x` scaled to unit length; zero rows stay zero."""
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def draw_centres(rng: np.random.Generator, settings: ItemSettings) -> tuple[np.ndarray, np.ndarray]:
  """[T, D] unit topic centres and [T * S, D] unit subtopic centres around them (subtopic g
  belongs to topic g // subtopics_per_topic), drawn from `rng`."""
  dim = settings.latent_dim
  centres = normalize(rng.standard_normal((settings.num_topics, dim)))
  num_sub = settings.num_topics * settings.subtopics_per_topic
  sub_noise = settings.subtopic_noise * rng.standard_normal((num_sub, dim)) / np.sqrt(dim)
  return centres, normalize(np.repeat(centres, settings.subtopics_per_topic, axis=0) + sub_noise)


def draw_items(
  rng: np.random.Generator, settings: ItemSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The topics and the items' truth, drawn from the world's main stream `rng`.

  Returns:
    [T, D] unit topic centres; [N + 1, D] unit item vectors, [N + 1] log popularity centred
    over items and [N + 1] quality, row 0 (padding) zeros in each.
  """
  num_n, dim = settings.num_items, settings.latent_dim
  centres, sub_centres = draw_centres(rng, settings)
  subtopics = rng.integers(0, len(sub_centres), num_n)  # the primary topic is subtopic // S
  noise = settings.item_noise * rng.standard_normal((num_n, dim)) / np.sqrt(dim)
  vectors = np.zeros((num_n + 1, dim))
  vectors[1:] = normalize(sub_centres[subtopics] + noise)
  ranks = rng.permutation(num_n) + 1.0
  log_pop = np.zeros(num_n + 1)
  log_pop[1:] = -settings.zipf_exponent * np.log(ranks)
  log_pop[1:] -= log_pop[1:].mean()
  quality = np.zeros(num_n + 1)
  quality[1:] = rng.standard_normal(num_n)
  return centres, vectors, log_pop, quality


def _stream(seed: int, index: int) -> np.random.Generator:
  """A generator of its own, seeded by the world's seed."""
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def content_vectors(
  settings: ItemSettings, vectors: np.ndarray, quality: np.ndarray
) -> np.ndarray | None:
  """[N + 1, content_dim] float32 noisy content (row 0 zeros); None when `content_dim` is 0.

  The signal is `[vectors, quality] @ P`, P a fixed [D + 1, content_dim] Gaussian map; the
  noise is Gaussian with its mean squared row norm `content_noise ** 2` times the signal's over
  items 1..N: at 1 the noise is as large as the signal, at 0 the content is exact.
  """
  if not settings.content_dim:
    return None
  rng = _stream(settings.seed, _CONTENT_STREAM)
  truth = np.concatenate([vectors, quality[:, None]], axis=1)
  projection = rng.standard_normal((truth.shape[1], settings.content_dim))
  signal = truth @ projection / np.sqrt(settings.content_dim)
  scale = settings.content_noise * np.sqrt(np.mean(signal[1:] ** 2))
  content = signal.copy()
  content[1:] += scale * rng.standard_normal(signal[1:].shape)
  return content.astype(np.float32)


def draw_cold_items(settings: ItemSettings) -> np.ndarray | None:
  """[N + 1] bool: a seeded `cold_item_fraction` share of items 1..N; None at 0."""
  if not settings.cold_item_fraction:
    return None
  num_n = settings.num_items
  cold = np.zeros(num_n + 1, dtype=bool)
  num_cold = int(round(settings.cold_item_fraction * num_n))
  cold[1 + _stream(settings.seed, _COLD_STREAM).permutation(num_n)[:num_cold]] = True
  return cold


def hidden_items(cold_items: np.ndarray, viewers: np.ndarray) -> np.ndarray:
  """[N + 1] cold mask, [L] whether each row's user may see cold items -> [L, N + 1] bool,
  the items never shown to each row's user."""
  return cold_items[None, :] & ~viewers[:, None]


def content_features(content: np.ndarray | None) -> ItemFeatures | None:
  """The world's content vectors as the item encoder's features; None without them."""
  if content is None:
    return None
  has_features = np.ones(len(content), dtype=bool)
  has_features[0] = False
  return ItemFeatures(
    content=content,
    categorical=(),
    numeric=np.zeros((len(content), 0), np.float32),
    has_features=has_features,
  )
