"""Losses of the blended step: sampled softmax retrieval, MAM and ranking. Pure functions."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from kernels import check_kernel, chunked_softmax, sampled_softmax
from unipinrec import sharding
from unipinrec.model.heads import l2_normalize, logits_with_none
from unipinrec.types import ItemVectors

SOFTMAX_CHOICES = ("sampled", "full", "auto")
AUTO_FULL_SOFTMAX_ITEMS = 20_000  # "auto": the largest catalogue scored whole
AUTO_RANDOM_NEGATIVES = 4096  # "auto": the fewest random negatives of a sampled softmax


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights and sampling of the three losses."""

  retrieval_weight: float = 1.0
  mam_weight: float = 0.5
  ranking_weight: float = 2.0  # ranking gains from a larger share; retrieval does not lose
  offset_weight: float = 0.2  # multi-token offset targets: a side task, kept light
  # Offset t's positives: the first action t or more seconds ahead, and (PinRec's windowed
  # multi-token loss) the later ones up to t + this, at most `max_future_positives`.
  # 0 keeps the first action alone.
  offset_window_seconds: float = 86400.0
  # Retrieval's positives: the later actions within this of the anchor, at most
  # `max_future_positives` (the next action always is one). The defaults keep the next action
  # alone, the one a held-out evaluation scores: a day's window of positives (PinRec's, 86400 s
  # and 8) lost to it on every log measured, with returns most of all.
  future_window_seconds: float = 0.0
  max_future_positives: int = 1
  intra_session: bool = False  # also count every later action of the anchor's session
  num_random_negatives: int = 256  # drawn uniformly from the catalogue
  num_inbatch_negatives: int = 256  # drawn from the batch's own actions (popularity-distributed)
  logq_correction: bool = True  # subtract log of each negative's expected count in the sample
  # The share of that correction the offset queries' loss keeps (1: all, 0: none). Below 1,
  # popular negatives drawn in-batch weigh more, so the far-future queries, whose target is
  # uncertain, hedge less with popular items: more distinct items across users, less recall.
  # Below 1 the offset lists are more diverse than autoregressive generation's at equal recall.
  offset_logq_strength: float = 0.8
  # The retrieval softmax's negatives: "sampled" (the draws above, log-Q corrected), "full"
  # (every catalogue item once: exact, [anchors, N] logits) or "auto", which `for_catalogue`
  # resolves from the catalogue's size (SASRec+: thousands of negatives come near the full
  # softmax, one is far from it).
  softmax: str = "sampled"
  # Train a query per outcome condition; False trains the "any" query alone (a plain next-item
  # model), and evaluation then reports that query only.
  outcome_conditions: bool = True
  # An item the user already acted on (in the window, up to the anchor) is no negative. Meant
  # for catalogues consumed once (films rated once), whose filtered figures drop history items
  # from the ranking: the loss then stops spending the query on pushing them down.
  exclude_seen_negatives: bool = False
  offset_anchor_stride: int = 4  # multi-token offsets are learned at every n-th anchor
  kernel: str = "xla"  # negatives' log-sum-exp: "xla" or "pallas" (kernels/sampled_softmax.py)
  # With kernel "xla": the log-sum-exp over this many anchors at a time, its logits recomputed
  # in the backward pass (kernels/chunked_softmax.py); 0 materialises all [A, Q, M] at once.
  # The Pallas kernel tiles on its own and ignores it. Chunks keep the logits in cache.
  chunk_anchors: int = 256

  def __post_init__(self):
    check_kernel(self.kernel)
    if self.softmax not in SOFTMAX_CHOICES:
      raise ValueError(f"step.loss.softmax={self.softmax!r}: expected one of {SOFTMAX_CHOICES}")
    if not 0.0 <= self.offset_logq_strength <= 1.0:
      raise ValueError(
        f"step.loss.offset_logq_strength={self.offset_logq_strength}: expected a share in [0, 1]"
      )
    if self.chunk_anchors < 0:
      raise ValueError(
        f"step.loss.chunk_anchors={self.chunk_anchors}: expected 0 (off) or a positive count"
      )
    if self.exclude_seen_negatives and self.kernel != "xla":
      raise ValueError(
        "step.loss.exclude_seen_negatives needs step.loss.kernel='xla': the Pallas kernel "
        f"takes no per-anchor mask (got kernel={self.kernel!r})"
      )

  @property
  def full_softmax(self) -> bool:
    """Whether every catalogue item is a negative; "auto" must be resolved first."""
    if self.softmax == "auto":
      raise ValueError("step.loss.softmax='auto' is resolved by LossConfig.for_catalogue first")
    return self.softmax == "full"

  def for_catalogue(self, num_items: int) -> LossConfig:
    """This config with softmax "auto" resolved for a catalogue of `num_items` items.

    Up to AUTO_FULL_SOFTMAX_ITEMS the softmax is full (an accelerator scores such a
    catalogue per anchor for little); above, sampled, with at least AUTO_RANDOM_NEGATIVES
    random draws. "sampled" and "full" are kept as they are.
    """
    if self.softmax != "auto":
      return self
    if num_items <= AUTO_FULL_SOFTMAX_ITEMS:
      return dataclasses.replace(self, softmax="full")
    negatives = max(self.num_random_negatives, AUTO_RANDOM_NEGATIVES)
    return dataclasses.replace(self, softmax="sampled", num_random_negatives=negatives)


def seen_negatives(items: jax.Array, negative_items: jax.Array) -> jax.Array:
  """Which negatives each anchor has already acted on, itself included.

  Args:
    items: [B, L] item ids (0 pads).
    negative_items: [M] negative ids (0 marks an unusable sample, never seen).

  Returns:
    [B, L, M] bool: negative m is one of items[b, :t + 1].
  """
  length = items.shape[1]
  # Each negative's first position in each row (L if absent), then one comparison per
  # (anchor, negative): a running OR over L (lax.cummax) was several times slower.
  positions = jnp.arange(length, dtype=jnp.int32)
  hits = items[:, :, None] == negative_items[None, None, :]  # [B, L, M]
  first = jnp.min(jnp.where(hits, positions[None, :, None], length), axis=1)  # [B, M]
  return (first[:, None, :] <= positions[None, :, None]) & (negative_items > 0)


def counted_positives(positive_items: jax.Array, positive_weights: jax.Array) -> jax.Array:
  """[B, L, W] ids of the positives with weight, -1 elsewhere: no negative may be one of them."""
  return jnp.where(positive_weights.sum(-1) > 0, positive_items, -1)


def sampled_softmax_loss(
  queries: jax.Array,
  item_vectors: ItemVectors,
  positive_items: jax.Array,
  positive_weights: jax.Array,
  negative_items: jax.Array,
  negative_log_q: jax.Array,
  temperature: float,
  kernel: str = "xla",
  seen: jax.Array | None = None,
  item_bias: jax.Array | None = None,
  chunk_anchors: int = 0,
  positive_bias: jax.Array | None = None,
  history_lse: jax.Array | None = None,
  positive_vectors: jax.Array | None = None,
) -> jax.Array:
  """Mean -log softmax of each positive against the shared sampled negatives.

  Only the items scored are encoded and normalised: the catalogue may hold millions of items,
  and encoding all of them every step would cost several catalogue-sized temporaries.

  Args:
    queries: [B, L, Q, D] unit queries (Q conditions per anchor).
    item_vectors: item ids -> their vectors (`UniPinRec.encode_items`); scored as unit
      vectors.
    positive_items: [B, L, W] positive item ids per anchor.
    positive_weights: [B, L, W, Q] weight of each (positive, condition) pair; 0 skips it.
    negative_items: [M] sampled negative ids; 0 marks an unusable sample.
    negative_log_q: [M] log expected count of each negative in the sample
      (zeros to switch the correction off).
    temperature: logits are cosine / temperature.
    kernel: "xla" materialises the [B, L, Q, M] logits (all, or a chunk at a time);
      "pallas" computes their log-sum-exp tile by tile (kernels/sampled_softmax.py).
    seen: optional [B, L, M] negatives to leave out per anchor (`seen_negatives`); "xla" only.
    item_bias: optional [R] logit bias per item, added to every logit (positive or negative).
    chunk_anchors: with "xla", that many anchors at a time (`chunked_softmax`), skipping the
      anchors without a weighted positive; 0: all at once. "pallas" ignores it.
    positive_bias: optional [B, L, W, Q] added to each positive's logit (the history bias h).
    history_lse: optional [B, L, Q] log-sum-exp of more negatives per anchor, outside the
      sample (`history_loss.history_logsumexp`), joined to the sampled ones'.
    positive_vectors: optional [B, L, W, D] `item_vectors(positive_items)` already at hand
      (`positives.gather_positions` of the batch's encoded items: positives are later actions of the
      same history, and a lookup in a row-sharded table costs buffers of the global batch).

  Returns:
    The weighted mean loss (0 when no pair has weight).
  """
  if positive_vectors is None:
    positive_vectors = item_vectors(positive_items)
  positive_vectors = l2_normalize(positive_vectors)
  positive_logits = jnp.einsum("blqd,blwd->blwq", queries, positive_vectors) / temperature
  if item_bias is not None:
    positive_logits = positive_logits + jnp.take(item_bias, positive_items)[..., None]
    # A negative's logit is cosine / temperature - log-Q: its bias enters as a smaller log-Q,
    # which both kernels already take.
    negative_log_q = negative_log_q - jnp.take(item_bias, negative_items)
  if positive_bias is not None:
    positive_logits = positive_logits + positive_bias
  excluded = counted_positives(positive_items, positive_weights)
  b, length, num_conditions, dim = queries.shape
  args = (
    queries.reshape(b * length, num_conditions, dim),
    l2_normalize(item_vectors(negative_items)),
    negative_log_q,
    negative_items,
    excluded.reshape(b * length, -1),
    temperature,
  )
  if kernel == "pallas":
    if seen is not None:
      raise ValueError("seen negatives need kernel='xla'")
    negative_lse = sampled_softmax.negative_logsumexp(*args)
  else:
    options = dict(excluded_mask=None if seen is None else seen.reshape(b * length, -1))
    if chunk_anchors:
      # Anchors without a positive (padding, most of a sparse log's histories) are not scored.
      negative_lse = chunked_softmax.chunked_negative_logsumexp(
        *args,
        **options,
        chunk_anchors=chunk_anchors,
        active=(positive_weights.sum((2, 3)) > 0).reshape(-1),
        groups=sharding.traced_batch_shards(),
      )
    else:
      negative_lse = sampled_softmax.reference_negative_logsumexp(*args, **options)
  negative_lse = negative_lse.reshape(b, length, num_conditions)
  if history_lse is not None:
    negative_lse = jnp.logaddexp(negative_lse, history_lse)
  pair_loss = jax.nn.softplus(negative_lse[:, :, None, :] - positive_logits)
  total_weight = positive_weights.sum()
  return jnp.sum(pair_loss * positive_weights) / jnp.maximum(total_weight, 1.0)


def sample_negatives(
  rng: jax.Array,
  items: jax.Array,
  item_log_frequency: jax.Array,
  num_random: int,
  num_inbatch: int,
  logq_correction: bool,
  full_softmax: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Uniform catalogue negatives plus in-batch negatives, with their log-Q.

  The sample is a mixture, so each negative is corrected by the log of its
  expected count under the whole mixture: `num_inbatch * p(item) +
  num_random / N`, with `p` the item's share of training actions. With
  `full_softmax` the "sample" is the catalogue itself, each item once, so
  the correction is log 1 = 0 and the loss is the exact softmax.

  An item whose log share is -inf is held out of training (a cold item, `PreparedData.
  cold_items`): it is never a negative either, as an item added after training never was.

  Returns:
    ([M] item ids, 0 where an in-batch draw hit padding or a draw hit a cold item; [M] log-Q).
  """
  num_items = item_log_frequency.shape[0] - 1
  if full_softmax:
    catalogue = jnp.arange(1, num_items + 1, dtype=jnp.int32)
    return _usable(catalogue, item_log_frequency), jnp.zeros(num_items, jnp.float32)
  random_rng, inbatch_rng = jax.random.split(rng)
  random_items = jax.random.randint(random_rng, (num_random,), 1, num_items + 1)
  flat_items = items.reshape(-1)
  inbatch_items = flat_items[jax.random.randint(inbatch_rng, (num_inbatch,), 0, flat_items.size)]
  negatives = jnp.concatenate([random_items, inbatch_items]).astype(jnp.int32)
  negatives = _usable(negatives, item_log_frequency)
  if not logq_correction:
    return negatives, jnp.zeros(negatives.shape, jnp.float32)
  expected = num_inbatch * jnp.exp(item_log_frequency[negatives]) + num_random / num_items
  return negatives, jnp.log(expected)


def _usable(negatives: jax.Array, item_log_frequency: jax.Array) -> jax.Array:
  """`negatives` with the cold items' (log share -inf) replaced by 0, the unusable sample."""
  return jnp.where(jnp.isneginf(item_log_frequency[negatives]), 0, negatives)


def masked_exclusive_ce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean cross-entropy of the softmax over (none, outcomes), none's logit 0, over masked-in rows.

  Divided by O as `masked_bce` is, so that the loss weights keep their scale.

  Args:
    logits: [..., O]; labels: [..., O] bool, at most one per row (none: all False);
    mask: [...] bool.
  """
  target = jnp.sum(logits * labels.astype(logits.dtype), axis=-1)  # 0 for none
  losses = jax.nn.logsumexp(logits_with_none(logits), axis=-1) - target
  weight = mask.astype(logits.dtype)
  return jnp.sum(losses * weight) / jnp.maximum(weight.sum() * logits.shape[-1], 1.0)


def outcome_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array, exclusive: bool):
  """The task heads' loss: `masked_exclusive_ce` when outcomes are exclusive, else `masked_bce`."""
  return (masked_exclusive_ce if exclusive else masked_bce)(logits, labels, mask)


def masked_bce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean binary cross-entropy per outcome over the masked-in rows.

  Args:
    logits: [..., O]; labels: [..., O] bool; mask: [...] bool.
  """
  losses = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
  weight = mask[..., None].astype(logits.dtype)
  return jnp.sum(losses * weight) / jnp.maximum(weight.sum() * logits.shape[-1], 1.0)
