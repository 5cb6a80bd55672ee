"""A synthetic world whose items are computed from their ids: catalogues of 10^8 and more.

The same users, policy and outcome model as `synthetic.generate_world`, with no array of
catalogue size anywhere: an item's truth and content come from `generated_items` (subtopic
`(id - 1) % G`, popularity rank `id`), popular slots from the inverse CDF of the Zipf law over
ids, relevant slots from a per-session candidate pool drawn lazily (a subtopic by the policy's
softmax over subtopic centres, then an item of it by its Zipf rank inside the subtopic). Users
are simulated in chunks, each from a seeded stream of its own, so memory follows the chunk,
not the user count, and the logs are the only output that grows with the users.

Where it differs from `generate_world`: the pool is a draw, not the policy's top items; there
is no oracle, and no returns, cold items, session momentum or several interests.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unipinrec.data import generated_items as gen_lib
from unipinrec.data.generated_items import ItemGenerator
from unipinrec.data.synthetic import OUTCOME_NAMES, START_TIME, SyntheticConfig
from unipinrec.data.synthetic_behaviour import (
  draw_interests,
  examination,
  move_interests,
  next_request_times,
  outcome_probs,
  request_surfaces,
)
from unipinrec.data.synthetic_items import draw_centres, normalize
from unipinrec.data.synthetic_logs import logs_from_requests
from unipinrec.data.synthetic_sampling import gumbel_top_k, zipf_ranks
from unipinrec.types import UserLogs

CHUNK_USERS = 1024  # users simulated together: bounds the working memory
# `SeedSequence.spawn_key`s of the world's seed (synthetic_items holds 0..2): the items', then
# each chunk's as (_CHUNK_STREAM, chunk).
_ITEM_STREAM, _CHUNK_STREAM = 4, 3


@dataclasses.dataclass(frozen=True)
class WorldAtScale:
  """Logged data plus the generator every item's truth and content are computed from."""

  config: SyntheticConfig
  logs: UserLogs
  items: ItemGenerator


@dataclasses.dataclass(frozen=True)
class SimulatedChunk:
  """One chunk of users' requests, indexed [request step, user, ...] (`logs_from_requests`)."""

  slates: np.ndarray  # [R, U, C] int32 items shown, by the policy's order
  outcomes: np.ndarray  # [R, U, C, 2] bool click, save
  times: np.ndarray  # [R, U] int64 request times
  surfaces: np.ndarray  # [R, U] int32
  prefixes: np.ndarray  # [R, U] int32 the user's actions before each request
  counts: np.ndarray  # [U] int64 each user's actions
  interests: np.ndarray  # [R, U, D] float32 the true interest at each request


def _check(cfg: SyntheticConfig) -> None:
  unsupported = {
    "revisit": cfg.revisit > 0,
    "cold_item_fraction": cfg.cold_item_fraction > 0,
    "session_momentum": cfg.session_momentum != 0,
    "multi_interest": cfg.multi_interest,
  }
  named = [name for name, used in unsupported.items() if used]
  if named:
    raise ValueError(f"a world of items from ids does not support {', '.join(named)}")
  if cfg.min_actions > cfg.requests_per_user:
    raise ValueError("min_actions cannot exceed requests_per_user")
  num_sub = cfg.num_topics * cfg.subtopics_per_topic
  if not max(num_sub, cfg.slate_size) <= cfg.num_items < 2**31:
    raise ValueError(f"num_items must be in [{max(num_sub, cfg.slate_size)}, 2^31)")


def _topics_and_items(config: SyntheticConfig) -> tuple[np.ndarray, ItemGenerator]:
  """[T, D] unit topic centres and the item generator (subtopic centres, and with
  `content_dim` > 0 the content map and the noise scale: `content_noise` times the signal's
  RMS), from the items' stream."""
  cfg = config
  rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_ITEM_STREAM,)))
  centres, sub_centres = draw_centres(rng, cfg)
  content_map = rng.standard_normal((cfg.latent_dim + 1, cfg.content_dim))
  generator = ItemGenerator(
    num_items=cfg.num_items,
    seed=cfg.seed,
    centres=sub_centres.astype(np.float32),
    item_noise=cfg.item_noise,
    zipf_exponent=cfg.zipf_exponent,
    content_map=content_map.astype(np.float32),
    content_scale=0.0,
  )
  if cfg.content_dim:
    scale = cfg.content_noise * gen_lib.content_signal_rms(generator)
    generator = dataclasses.replace(generator, content_scale=scale)
  return centres, generator


def _draw_pool(
  rng: np.random.Generator, cfg: SyntheticConfig, items: ItemGenerator, policy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """[L, D] policy interests -> [L, M] candidate items and their policy logits (-inf for a
  repeat inside the row).

  A subtopic by the softmax of `policy_temperature` times the policy's affinity to the
  subtopic centres, then an item by its Zipf rank inside the subtopic.
  """
  num_l, num_g = len(policy), items.num_subtopics
  logits = cfg.policy_temperature * (policy @ items.centres.T)
  cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
  cdf /= cdf[:, -1:]
  rows = np.arange(num_l)[:, None]
  # One sorted search for all rows: row l's cdf lives in [l, l + 1].
  drawn = np.searchsorted((cdf + rows).ravel(), (rng.random((num_l, cfg.policy_pool)) + rows))
  sub = np.clip(drawn - rows * num_g, 0, num_g - 1)  # a draw on a row's edge stays in it
  sizes = (cfg.num_items - 1 - sub) // num_g + 1  # items of each subtopic
  ids = (zipf_ranks(rng.random(sub.shape), sizes, cfg.zipf_exponent) - 1) * num_g + sub + 1
  # Popular items recur across the rows: each distinct one is computed once.
  distinct, where = np.unique(ids, return_inverse=True)
  vectors = gen_lib.vectors(items, distinct)[where.reshape(ids.shape)]
  affinity = np.einsum("ld,lmd->lm", policy, vectors)
  scores = cfg.policy_temperature * affinity + cfg.policy_popularity * gen_lib.log_popularity(
    items, ids
  )
  order = np.argsort(ids, axis=1, kind="stable")
  ranked = np.take_along_axis(ids, order, axis=1)
  repeat = np.zeros(ids.shape, dtype=bool)
  np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
  return ids, np.where(repeat, -np.inf, scores)


class EngagedItems:
  """The items each user of a chunk engaged with so far, as sorted `user * (N + 1) + item`
  keys: banned from the user's later slates, as `generate_world` bans them."""

  def __init__(self, num_items: int):
    """No user has engaged with anything yet."""
    self._stride = num_items + 1
    self._keys = np.zeros(0, np.int64)

  def contain(self, items: np.ndarray) -> np.ndarray:
    """[U, K] items, row u user u's -> [U, K] bool: the user engaged with the item before."""
    keys = np.arange(len(items), dtype=np.int64)[:, None] * self._stride + items
    where = np.minimum(np.searchsorted(self._keys, keys), max(len(self._keys) - 1, 0))
    return self._keys[where] == keys if len(self._keys) else np.zeros(items.shape, bool)

  def add(self, items: np.ndarray, engaged: np.ndarray) -> None:
    """Records [U, C] `items` where [U, C] `engaged`."""
    rows, columns = np.nonzero(engaged)
    new = rows.astype(np.int64) * self._stride + items[rows, columns]
    self._keys = np.union1d(self._keys, new)


def _draw_popular(
  rng: np.random.Generator, cfg: SyntheticConfig, engaged_before: EngagedItems, num_rows: int
) -> np.ndarray:
  """[L, k] distinct items drawn by global popularity among those each row's user has not
  engaged with (successive sampling by rejection)."""
  num_pop = cfg.num_popular
  draws = np.zeros((num_rows, 0), dtype=np.int64)
  while True:
    more = zipf_ranks(rng.random((num_rows, 4 * num_pop)), cfg.num_items, cfg.zipf_exponent)
    draws = np.concatenate([draws, more], axis=1)
    earlier = np.tril(np.ones((draws.shape[1],) * 2, dtype=bool), -1)
    fresh = ~np.any((draws[:, :, None] == draws[:, None, :]) & earlier, axis=2)
    fresh &= ~engaged_before.contain(draws)
    if np.all(fresh.sum(axis=1) >= num_pop):
      first = np.argsort(~fresh, axis=1, kind="stable")[:, :num_pop]
      return np.take_along_axis(draws, first, axis=1)


def simulate_chunk(
  config: SyntheticConfig, centres: np.ndarray, items: ItemGenerator, chunk: int
) -> SimulatedChunk:
  """Users `chunk * CHUNK_USERS` onwards (at most CHUNK_USERS of them) through every request.

  Args:
    config: the world's knobs.
    centres: [T, D] unit topic centres.
    items: the item generator.
    chunk: which chunk; seeds the chunk's own stream.
  """
  cfg = config
  rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_CHUNK_STREAM, chunk)))
  num_u = min(CHUNK_USERS, cfg.num_users - chunk * CHUNK_USERS)
  num_r, num_c, num_pop, dim = (
    cfg.requests_per_user,
    cfg.slate_size,
    cfg.num_popular,
    cfg.latent_dim,
  )
  _, _, interest = draw_interests(rng, cfg, centres, num_u)
  policy_error = cfg.policy_noise * rng.standard_normal((num_u, dim)) / np.sqrt(dim)
  now = START_TIME + rng.integers(0, 30 * 86_400, num_u)
  session_surface = rng.integers(0, cfg.num_surfaces, num_u)
  exam = examination(cfg)
  counts = np.zeros(num_u, dtype=np.int64)
  engaged_before = EngagedItems(cfg.num_items)
  pool = np.zeros((num_u, cfg.policy_pool), dtype=np.int64)
  pool_logits = np.zeros((num_u, cfg.policy_pool))
  out = SimulatedChunk(
    slates=np.zeros((num_r, num_u, num_c), dtype=np.int32),
    outcomes=np.zeros((num_r, num_u, num_c, 2), dtype=bool),
    times=np.zeros((num_r, num_u), dtype=np.int64),
    surfaces=np.zeros((num_r, num_u), dtype=np.int32),
    prefixes=np.zeros((num_r, num_u), dtype=np.int32),
    counts=counts,
    interests=np.zeros((num_r, num_u, dim), dtype=np.float32),
  )
  for t in range(num_r):
    new_session = rng.random(num_u) < 1.0 / cfg.mean_session_length
    if t > 0:
      now = next_request_times(rng, cfg, now, new_session)
      interest = move_interests(rng, cfg, centres, interest, new_session)
      session_surface = np.where(
        new_session, rng.integers(0, cfg.num_surfaces, num_u), session_surface
      )
    surface = request_surfaces(rng, cfg, session_surface)
    policy_interest = normalize(interest + policy_error)

    # Logging policy: popular slots, then relevant slots from the session's candidate pool.
    refresh = np.nonzero(new_session | (t == 0))[0]
    pool[refresh], pool_logits[refresh] = _draw_pool(rng, cfg, items, policy_interest[refresh])
    popular = _draw_popular(rng, cfg, engaged_before, num_u)
    taken = engaged_before.contain(pool) | np.any(pool[:, :, None] == popular[:, None, :], axis=2)
    relevant = gumbel_top_k(rng, np.where(taken, -np.inf, pool_logits), num_c - num_pop)
    relevant = np.where(relevant >= 0, np.take_along_axis(pool, np.maximum(relevant, 0), 1), 0)
    slate = np.concatenate([popular, relevant], axis=1)
    vectors = gen_lib.vectors(items, slate)
    log_pop = gen_lib.log_popularity(items, slate)
    score = cfg.policy_temperature * np.einsum("ud,ucd->uc", policy_interest, vectors)
    score = np.where(slate > 0, score + cfg.policy_popularity * log_pop, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")
    slate = np.take_along_axis(slate, order, axis=1)
    vectors = np.take_along_axis(vectors, order[..., None], axis=1)
    log_pop = np.take_along_axis(log_pop, order, axis=1)

    # Users: examine by position, engage, then save or click.
    engage_p, save_p = outcome_probs(
      cfg, interest, vectors, log_pop, gen_lib.quality(items, slate), surface
    )
    engaged = (rng.random((num_u, num_c)) < exam * engage_p) & (slate > 0)
    # Guarantee min_actions: the last requests engage position 0 if needed.
    engaged[:, 0] |= (cfg.min_actions - counts >= num_r - t) & ~engaged.any(axis=1)
    saved = engaged & (rng.random((num_u, num_c)) < save_p)

    out.slates[t], out.times[t], out.surfaces[t], out.prefixes[t] = slate, now, surface, counts
    out.outcomes[t, ..., 0], out.outcomes[t, ..., 1] = engaged & ~saved, saved
    out.interests[t] = interest
    engaged_before.add(slate, engaged)
    counts += engaged.sum(axis=1)
  return out


def _concatenate(parts: list[UserLogs]) -> UserLogs:
  """Users' logs back to back: arrays joined, offsets shifted by the earlier parts' totals."""
  fields = {}
  for field in dataclasses.fields(UserLogs):
    values = [getattr(part, field.name) for part in parts]
    if field.name.endswith("_offsets"):
      starts = np.cumsum([0] + [v[-1] for v in values[:-1]])
      values = [values[0][:1]] + [v[1:] + start for v, start in zip(values, starts, strict=True)]
    fields[field.name] = np.concatenate(values) if isinstance(values[0], np.ndarray) else values[0]
  return UserLogs(**fields)


def generate_world_at_scale(config: SyntheticConfig) -> WorldAtScale:
  """Simulates the logging policy and users over items computed from their ids; deterministic
  in `config.seed`. Raises ValueError for the knobs it does not support."""
  cfg = config
  _check(cfg)
  centres, items = _topics_and_items(cfg)
  parts = []
  for chunk in range(-(-cfg.num_users // CHUNK_USERS)):
    sim = simulate_chunk(cfg, centres, items, chunk)
    parts.append(
      logs_from_requests(
        sim.slates,
        sim.outcomes,
        sim.times,
        sim.surfaces,
        sim.prefixes,
        sim.counts,
        seconds_per_position=cfg.seconds_per_position,
        num_items=cfg.num_items,
        num_surfaces=cfg.num_surfaces,
        outcome_names=OUTCOME_NAMES,
      )
    )
  return WorldAtScale(config=cfg, logs=_concatenate(parts), items=items)
