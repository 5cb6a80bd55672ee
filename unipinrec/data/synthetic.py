"""A deterministic synthetic recommender world with known ground truth.

Items live in a latent space around topic centres; users' interests drift
through it. A logging policy shows slates mixing popular and relevant items
(or, with `revisit`, the user's earlier items); examination falls with position
and engagement follows a known logistic model, so every probability a model
tries to learn is available exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unipinrec.data import synthetic_items as items_lib
from unipinrec.data import synthetic_revisit as revisit_lib
from unipinrec.data.synthetic_behaviour import (
  draw_interests,
  examination,
  move_interests,
  next_request_times,
  outcome_probs,
  request_surfaces,
)
from unipinrec.data.synthetic_items import normalize
from unipinrec.data.synthetic_logs import logs_from_requests
from unipinrec.data.synthetic_sampling import (
  draw_slots,
  gumbel_top_k,
  inclusion_probs,
  policy_pool,
  sample_popular,
)
from unipinrec.types import UserLogs

OUTCOME_NAMES = ("click", "save")
START_TIME = 1_700_000_000  # seconds; an arbitrary recent epoch


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Every knob of the synthetic world; defaults are the embedded dataset."""

  # Users U: two thirds train (data.holdout_fraction); fewer training users left the model's
  # ranking below the history oracle's.
  num_users: int = 6000
  num_items: int = 5000  # catalogue size N, ids 1..N
  num_topics: int = 20  # topic centres items cluster around
  latent_dim: int = 32  # width of item and interest vectors
  requests_per_user: int = 60  # slates shown to each user
  slate_size: int = 10  # items per slate C
  num_surfaces: int = 3  # request surfaces, 0..num_surfaces - 1
  seed: int = 0  # seeds every random draw
  subtopics_per_topic: int = 10  # clusters inside each topic
  subtopic_noise: float = 1.0  # subtopic centre spread around its topic centre
  item_noise: float = 0.3  # item spread around its subtopic centre
  zipf_exponent: float = 1.0  # popularity of rank r is r ** -zipf_exponent
  max_user_topics: int = 3  # a user starts as a mix of 1..this many topics
  user_offset: float = 0.5  # scale of the personal offset from the topic mix
  mean_session_length: float = 5.0  # mean requests per session
  within_session_gap_s: float = 90.0  # mean extra seconds between requests
  between_session_gap_s: float = 129_600.0  # mean seconds between sessions
  seconds_per_position: int = 2  # an action's delay per slate position
  drift: float = 0.15  # per-session random-walk step of the interest
  jump_prob: float = 0.1  # per-session chance of jumping to a new topic
  jump_strength: float = 0.7  # weight of the new topic centre in a jump
  # Short-term intent: inside a session, a request's interest leans towards the
  # session's last engaged item by this weight (0: one interest per session).
  session_momentum: float = 0.0
  # Several interests: each topic of a user's mix is an interest of its own, and each
  # session resumes one of them, drawn by the mix weights (False: one blended interest).
  multi_interest: bool = False
  policy_noise: float = 0.3  # scale of the policy's persistent per-user error
  policy_temperature: float = 8.0  # policy logit per unit estimated affinity
  policy_popularity: float = 0.5  # policy logit per unit log popularity
  popular_fraction: float = 0.3  # share of slate slots sampled by popularity
  policy_pool: int = 500  # per-session candidate pool of the relevant slots
  position_bias: float = 0.5  # examination at position p is (1 + p) ** -this
  engage_bias: float = -2.5  # engagement logit intercept
  engage_affinity: float = 5.0  # engagement logit per unit true affinity
  engage_popularity: float = 0.1  # engagement logit per unit log popularity
  engage_quality: float = 0.1  # engagement logit per unit quality
  surface_shift: float = 0.3  # surfaces shift engagement logits in [-s, s]
  save_bias: float = -0.3  # save-given-engaged logit intercept
  save_quality: float = 1.0  # save logit per unit quality
  save_affinity: float = 0.0  # save logit per unit true affinity
  min_actions: int = 3  # every user is guaranteed this many actions
  revisit: float = 0.0  # chance a request shows earlier items again (synthetic_revisit.py)
  # A return's weight per action since the item's latest. Nearer 1, affinity counts as much as
  # recency: at 0.8 "the most recent items" was the truth and left a model nothing to learn.
  revisit_decay: float = 0.98
  content_dim: int = 0  # width of the items' noisy content vectors (0: none; synthetic_items.py)
  content_noise: float = 0.5  # the content's noise-to-signal ratio of norms (0: exact)
  cold_item_fraction: float = 0.0  # share of items only held-out users are ever shown
  # Compute every item from its id instead of drawing item tables: catalogues of 10^8 and more;
  # no oracle (synthetic_at_scale.py).
  items_from_ids: bool = False

  @property
  def num_popular(self) -> int:
    """Slots per slate filled by popularity sampling."""
    return int(round(self.slate_size * self.popular_fraction))


@dataclasses.dataclass(frozen=True)
class SyntheticWorld:
  """Logged data plus the ground truth that generated it.

  Requests are the slate rows of `logs`: request `s` belongs to user
  `request_users[s]` and was served under `request_interests[s]`.
  """

  config: SyntheticConfig
  logs: UserLogs
  item_vectors: np.ndarray  # [N + 1, D] unit rows, row 0 zeros
  item_log_popularity: np.ndarray  # [N + 1] centred over items, row 0 = 0
  item_quality: np.ndarray  # [N + 1] row 0 = 0
  request_interests: np.ndarray  # [S, D] true interest at each request
  request_policy_interests: np.ndarray  # [S, D] the policy's estimate of it
  request_users: np.ndarray  # [S] int64 owner of each request
  item_content: np.ndarray | None = None  # [N + 1, content_dim] float32 noisy content, row 0 zeros
  cold_items: np.ndarray | None = None  # [N + 1] bool, shown only to `cold_item_viewers`
  cold_item_viewers: np.ndarray | None = None  # [U] bool, the users who may see cold items

  @property
  def _item_truth(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return self.item_vectors, self.item_log_popularity, self.item_quality

  def true_outcome_probs(self, slate_ids: np.ndarray, items: np.ndarray) -> np.ndarray:
    """True outcome probabilities of items at requests, given examination.

    Args:
      slate_ids: [L] request (slate row) ids.
      items: [L, C] item ids; 0 is padding.

    Returns:
      [L, C, O] float64: P(click), P(save) when examined, without position
      bias; zeros for item 0.
    """
    slate_ids = np.asarray(slate_ids)
    items = np.asarray(items)
    engage, save = _outcome_model(
      self.config,
      self._item_truth,
      self.request_interests[slate_ids],
      items,
      self.logs.slate_surfaces[slate_ids],
    )
    return np.stack([engage * (1.0 - save), engage * save], axis=-1)

  def oracle_retrieval_scores(self, slate_ids: np.ndarray) -> np.ndarray:
    """Scores proportional to P(item engaged at the request), catalogue-wide.

    The score is P(shown) * mean examination * P(engage | examined).
    Approximations: P(shown) treats the popular and relevant slot draws as
    independent (the relevant draw really excludes the popular picks); each
    draw's inclusion probability for successive sampling of k items with
    weights w is approximated by 1 - exp(-c * w) with c set so they sum to
    k; examination is averaged over positions (the item's position depends
    on the rest of the slate). The forced engagements that guarantee
    `min_actions` are ignored.

    Args:
      slate_ids: [L] request ids.

    Returns:
      [L, N + 1] float64; column 0 is -inf, items the user engaged with
      before the request score 0 unless `revisit` shows them again, and so
      do cold items for a user who may not see them.
    """
    cfg, logs = self.config, self.logs
    slate_ids = np.asarray(slate_ids)
    history, lengths = revisit_lib.earlier_actions(logs, self.request_users[slate_ids], slate_ids)
    allowed = np.ones((len(slate_ids), cfg.num_items + 1), dtype=bool)
    allowed[:, 0] = False
    np.put_along_axis(allowed, history, False, axis=1)
    if self.cold_items is not None:
      allowed &= ~items_lib.hidden_items(
        self.cold_items, self.cold_item_viewers[self.request_users[slate_ids]]
      )
    logits_pop = np.broadcast_to(self.item_log_popularity, allowed.shape)
    policy = self.request_policy_interests[slate_ids]
    pool, pool_logits = policy_pool(cfg, policy, self.item_vectors, self.item_log_popularity)
    rows = np.arange(len(slate_ids))[:, None]
    logits_rel = np.full(allowed.shape, -np.inf)
    logits_rel[rows, pool] = pool_logits
    pi_pop = inclusion_probs(logits_pop, allowed, cfg.num_popular)
    pi_rel = inclusion_probs(logits_rel, allowed, cfg.slate_size - cfg.num_popular)
    shown = 1.0 - (1.0 - pi_pop) * (1.0 - pi_rel)
    shown = revisit_lib.shown_with_returns(cfg, shown, history, lengths, policy, self.item_vectors)
    all_items = np.broadcast_to(np.arange(cfg.num_items + 1), allowed.shape)
    engage, _ = _outcome_model(
      cfg,
      self._item_truth,
      self.request_interests[slate_ids],
      all_items,
      logs.slate_surfaces[slate_ids],
    )
    scores = shown * examination(cfg).mean() * engage
    scores[:, 0] = -np.inf
    return scores


def _outcome_model(
  cfg: SyntheticConfig,
  item_truth: tuple[np.ndarray, np.ndarray, np.ndarray],
  interests: np.ndarray,
  items: np.ndarray,
  surfaces: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
  """[L, D], [L, C], [L] -> `outcome_probs` of the items; `item_truth` is (vectors, log_pop,
  quality)."""
  engage, save = outcome_probs(cfg, interests, *(a[items] for a in item_truth), surfaces)
  return np.where(items > 0, engage, 0.0), save


def generate_world(
  config: SyntheticConfig, cold_item_viewers: np.ndarray | None = None
) -> SyntheticWorld:
  """Simulates the logging policy and users; deterministic in `config.seed`.

  Args:
    config: the world's knobs.
    cold_item_viewers: [U] bool, the users the policy may show cold items to (the held-out
      ones); read only, and needed, when `config.cold_item_fraction` > 0.
  """
  if config.items_from_ids:
    raise ValueError("items_from_ids: the world is synthetic_at_scale.generate_world_at_scale's")
  cfg = config
  rng = np.random.default_rng(cfg.seed)
  num_u, num_n, dim = cfg.num_users, cfg.num_items, cfg.latent_dim
  num_r, num_c, num_pop = cfg.requests_per_user, cfg.slate_size, cfg.num_popular
  if cfg.min_actions > num_r:
    raise ValueError("min_actions cannot exceed requests_per_user")
  revisit_lib.check_revisit(cfg)
  # Returns draw from a stream of their own, so every other draw is the world's without them.
  revisit_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(1)[0])

  cold_items = items_lib.draw_cold_items(cfg)
  if cold_items is not None and cold_item_viewers is None:
    raise ValueError("cold_item_fraction > 0 needs cold_item_viewers, who may see cold items")
  centres, vectors, log_pop, quality = items_lib.draw_items(rng, cfg)

  mix, user_topics, interest = draw_interests(rng, cfg, centres, num_u)
  if cfg.multi_interest:
    # Drawn only here, so the single-interest world keeps its random stream.
    slots = normalize(
      centres[user_topics]
      + cfg.user_offset * rng.standard_normal((num_u, cfg.max_user_topics, dim)) / np.sqrt(dim)
    )
    active = draw_slots(rng, mix)
    interest = slots[np.arange(num_u), active]
  policy_error = cfg.policy_noise * rng.standard_normal((num_u, dim)) / np.sqrt(dim)

  item_truth = (vectors, log_pop, quality)
  exam = examination(cfg)
  users = np.arange(num_u)
  engaged_before = np.zeros((num_u, num_n + 1), dtype=bool)
  engaged_before[:, 0] = True  # padding is never a candidate
  if cold_items is not None:  # the policy's bans keep cold items from the other users
    engaged_before |= items_lib.hidden_items(cold_items, cold_item_viewers)
  counts = np.zeros(num_u, dtype=np.int64)
  now = START_TIME + rng.integers(0, 30 * 86_400, num_u)
  session_surface = rng.integers(0, cfg.num_surfaces, num_u)

  slates = np.zeros((num_r, num_u, num_c), dtype=np.int32)
  outcomes = np.zeros((num_r, num_u, num_c, 2), dtype=bool)
  times = np.zeros((num_r, num_u), dtype=np.int64)
  surfaces = np.zeros((num_r, num_u), dtype=np.int32)
  prefixes = np.zeros((num_r, num_u), dtype=np.int32)
  interests = np.zeros((num_r, num_u, dim))
  pool = np.zeros((num_u, cfg.policy_pool), dtype=np.int64)
  pool_logits = np.zeros((num_u, cfg.policy_pool))
  policy_interests = np.zeros((num_r, num_u, dim))
  last_engaged = np.zeros(num_u, dtype=np.int64)  # this session's latest action, 0 = none
  history = np.zeros((num_u, num_r * num_c), dtype=np.int32)  # every user's actions so far
  for t in range(num_r):
    # Sessions: drift and jumps happen between sessions only.
    new_session = rng.random(num_u) < 1.0 / cfg.mean_session_length
    if t > 0:
      now = next_request_times(rng, cfg, now, new_session)
      if cfg.multi_interest:
        # The ending session keeps its interest's state; the next resumes one of the user's.
        slots[users, active] = interest
        active = np.where(new_session, draw_slots(rng, mix), active)
        interest = slots[users, active]
      interest = move_interests(rng, cfg, centres, interest, new_session)
      session_surface = np.where(
        new_session, rng.integers(0, cfg.num_surfaces, num_u), session_surface
      )
      last_engaged = np.where(new_session, 0, last_engaged)
    request_interest = interest
    if cfg.session_momentum:
      # Item 0's vector is zero: before the session's first action the interest is the session's.
      request_interest = normalize(interest + cfg.session_momentum * vectors[last_engaged])
    # A request mostly stays on its session's surface.
    surface = request_surfaces(rng, cfg, session_surface)
    policy_interest = normalize(request_interest + policy_error)

    # Logging policy: popular slots, then relevant slots from the session's
    # candidate pool, ordered by the policy's score.
    refresh = np.nonzero(new_session | (t == 0))[0]
    pool[refresh], pool_logits[refresh] = policy_pool(
      cfg, policy_interest[refresh], vectors, log_pop
    )
    popular = sample_popular(rng, log_pop, engaged_before, num_pop)
    taken = engaged_before[users[:, None], pool] | np.any(
      pool[:, :, None] == popular[:, None, :], axis=2
    )
    relevant = gumbel_top_k(rng, np.where(taken, -np.inf, pool_logits), num_c - num_pop)
    relevant = np.where(relevant >= 0, np.take_along_axis(pool, np.maximum(relevant, 0), 1), 0)
    slate = np.concatenate([popular, relevant], axis=1)
    if cfg.revisit:  # a return request shows earlier items in place of the usual slate
      returned = revisit_lib.draw_returns(
        revisit_rng, cfg, history, counts, policy_interest, vectors
      )
      slate = np.where(returned.any(axis=1, keepdims=True), returned, slate)
    score = cfg.policy_temperature * np.einsum("ud,ucd->uc", policy_interest, vectors[slate])
    score = np.where(slate > 0, score + cfg.policy_popularity * log_pop[slate], -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")
    slate = np.take_along_axis(slate, order, axis=1).astype(np.int32)

    # Users: examine by position, engage, then save or click.
    engage_p, save_p = _outcome_model(cfg, item_truth, request_interest, slate, surface)
    engaged = (rng.random((num_u, num_c)) < exam * engage_p) & (slate > 0)
    # Guarantee min_actions: the last requests engage position 0 if needed.
    force = (cfg.min_actions - counts >= num_r - t) & ~engaged.any(axis=1)
    engaged[:, 0] |= force
    saved = engaged & (rng.random((num_u, num_c)) < save_p)

    slates[t], times[t], surfaces[t], prefixes[t] = slate, now, surface, counts
    outcomes[t, ..., 0], outcomes[t, ..., 1] = engaged & ~saved, saved
    interests[t], policy_interests[t] = request_interest, policy_interest
    # The latest action of this request is its engaged item lowest on the slate.
    latest = num_c - 1 - np.argmax(engaged[:, ::-1], axis=1)
    last_engaged = np.where(engaged.any(axis=1), slate[users, latest], last_engaged)
    engaged_before[users[:, None], np.where(engaged, slate, 0)] = True
    revisit_lib.record_actions(history, counts, slate, engaged)
    counts = counts + engaged.sum(axis=1)

  logs = logs_from_requests(
    slates,
    outcomes,
    times,
    surfaces,
    prefixes,
    counts,
    seconds_per_position=cfg.seconds_per_position,
    num_items=num_n,
    num_surfaces=cfg.num_surfaces,
    outcome_names=OUTCOME_NAMES,
  )
  return SyntheticWorld(
    config=cfg,
    logs=logs,
    item_vectors=vectors,
    item_log_popularity=log_pop,
    item_quality=quality,
    request_interests=interests.transpose(1, 0, 2).reshape(-1, dim),
    request_policy_interests=policy_interests.transpose(1, 0, 2).reshape(-1, dim),
    request_users=np.repeat(users, num_r),
    item_content=items_lib.content_vectors(cfg, vectors, quality),
    cold_items=cold_items,
    cold_item_viewers=None if cold_items is None else np.asarray(cold_item_viewers, dtype=bool),
  )
