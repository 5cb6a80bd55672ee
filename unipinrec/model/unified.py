"""One model API over the shared transformer and both heads.

`__call__` is the blended training pass (history and slates in one forward);
the other methods are the serving pieces, meant for `model.apply(...,
method=...)`: encode histories once, then build queries or rank candidates on
the cached keys/values.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from unipinrec.model.config import ModelConfig
from unipinrec.model.embeddings import ActionTokenizer
from unipinrec.model.heads import RetrievalHead, TaskHeads, l2_normalize
from unipinrec.model.repeats import RepeatBias, RepeatTables, occurrences
from unipinrec.model.transformer import Transformer
from unipinrec.types import KVCache, TrainBatch


@flax.struct.dataclass
class TrainOutputs:
  """What the losses need from one blended forward pass."""

  queries: jax.Array  # [B, L, O + 1, D] unit queries for every condition
  offset_queries: jax.Array | None  # [B, L, T - 1, D] "any" queries at offsets 1.. (T > 1)
  item_bias: jax.Array | None  # [R] retrieval logit bias per item; None without one
  repeat_tables: RepeatTables | None  # h, the history bias of retrieval; None without one
  history_task_logits: jax.Array  # [B, L, O]
  candidate_task_logits: jax.Array  # [B, S, C, O]


class UniPinRec(nn.Module):
  """Shared causal transformer with a retrieval head and per-outcome task heads."""

  config: ModelConfig

  def setup(self):
    self.tokenizer = ActionTokenizer(self.config)
    self.transformer = Transformer(self.config)
    self.retrieval_head = RetrievalHead(self.config)
    self.task_heads = TaskHeads(self.config)
    if self.config.repeat_buckets:
      self.repeat_bias = RepeatBias(self.config)

  def encode(
    self,
    items: jax.Array,
    outcomes: jax.Array,
    times: jax.Array,
    surfaces: jax.Array,
    lengths: jax.Array,
    action_masked: jax.Array | None = None,
    deterministic: bool = True,
  ) -> tuple[jax.Array, KVCache]:
    """Histories -> ([B, L, W] states, user KV cache).

    Args:
      items: [B, L] item ids, right-padded with 0.
      outcomes: [B, L, O] multi-hot actions.
      times: [B, L] float seconds (any origin shared within a row).
      surfaces: [B, L] surface ids.
      lengths: [B] valid positions.
      action_masked: [B, L] bool, actions replaced by [MASK] (MAM); none if omitted.
      deterministic: no dropout (everywhere but training).
    """
    tokens = self._history_tokens(items, outcomes, times, surfaces, action_masked)
    return self.transformer.encode(tokens, lengths, deterministic)

  def encode_last(
    self,
    items: jax.Array,
    outcomes: jax.Array,
    times: jax.Array,
    surfaces: jax.Array,
    lengths: jax.Array,
  ) -> tuple[jax.Array, KVCache]:
    """Histories -> ([B, W] last states, user KV cache): `encode` for serving.

    Only the last state is computed in the final layer (the query is read
    there), so it costs about a layer's attention less than `encode`.
    Arguments as `encode`; no masking, no dropout.
    """
    tokens = self._history_tokens(items, outcomes, times, surfaces, None)
    return self.transformer.encode_last(tokens, lengths)

  def _history_tokens(self, items, outcomes, times, surfaces, action_masked) -> jax.Array:
    """[B, L, W] tokens of right-padded histories."""
    seq_len = items.shape[1]
    positions = jnp.broadcast_to(jnp.arange(seq_len), items.shape)
    previous_times = jnp.concatenate([times[:, :1], times[:, :-1]], axis=1)
    if action_masked is None:
      action_masked = jnp.zeros(items.shape, dtype=bool)
    return self.tokenizer(
      items,
      outcomes,
      action_masked,
      times - previous_times,
      positions > 0,
      surfaces,
      positions,
    )

  def candidate_states(
    self,
    cache: KVCache,
    history_times: jax.Array,
    candidate_items: jax.Array,
    request_times: jax.Array,
    request_surfaces: jax.Array,
    prefix: jax.Array,
    deterministic: bool = True,
  ) -> jax.Array:
    """Candidates as masked-action tokens on the cache -> [B, C, W] states.

    Args:
      cache: the user KV cache.
      history_times: [B, L] the histories' times, for the candidates' time gap.
      candidate_items: [B, C] item ids.
      request_times: [B, C] time of the request that shows each candidate.
      request_surfaces: [B, C] surface of that request.
      prefix: [B, C] history positions each candidate sees.
      deterministic: no dropout (everywhere but training).
    """
    last = jnp.take_along_axis(history_times, jnp.maximum(prefix - 1, 0), axis=1)
    outcomes = jnp.zeros(candidate_items.shape + (self.config.num_outcomes,), dtype=jnp.float32)
    tokens = self.tokenizer(
      candidate_items,
      outcomes,
      jnp.ones(candidate_items.shape, dtype=bool),
      request_times - last,
      prefix > 0,
      request_surfaces,
      jnp.minimum(prefix, self.config.max_length),
    )
    return self.transformer.attend_candidates(tokens, cache, prefix, deterministic)

  def rank(
    self,
    cache: KVCache,
    history_times: jax.Array,
    candidate_items: jax.Array,
    request_times: jax.Array,
    request_surfaces: jax.Array,
    prefix: jax.Array,
  ) -> jax.Array:
    """Per-outcome logits [B, C, O] of candidates; arguments as `candidate_states`."""
    states = self.candidate_states(
      cache, history_times, candidate_items, request_times, request_surfaces, prefix
    )
    return self.task_logits(states, candidate_items)

  def queries(
    self, states: jax.Array, conditions: jax.Array, offsets: jax.Array | None = None
  ) -> jax.Array:
    """[..., W] states, [...] condition ids (0 any, o + 1 outcome o) -> [..., S] queries.

    The first D coordinates are the unit query; with the item bias a last
    coordinate 1 picks up each item's bias from `item_vectors` (S =
    `config.score_dim`). `offsets` (ids into `config.offsets_seconds`, default
    0 = the next action) ask for the action that far ahead: multi-token
    generation.
    """
    unit = self.retrieval_head(states, conditions, offsets)
    if not self.config.item_bias:
      return unit
    return jnp.concatenate([unit, jnp.ones(unit.shape[:-1] + (1,), unit.dtype)], axis=-1)

  def item_vectors(self) -> jax.Array:
    """[N + 1, S] item vectors that `queries` score by inner product.

    The first D coordinates are the unit item vector; with the item bias the
    last is temperature x bias, so a score is the training logit times the
    temperature (cosine + temperature x bias): the same order.
    """
    return self.scored_item_vectors(jnp.arange(self.config.num_items + 1))

  def scored_item_vectors(self, items: jax.Array) -> jax.Array:
    """[...] item ids -> [..., S] their rows of `item_vectors`, encoding only these items: a
    catalogue too large to hold is scored a chunk at a time."""
    unit = l2_normalize(self.encode_items(items))
    bias = self.tokenizer.item_encoder.biases()
    if bias is None:
      return unit
    return jnp.concatenate([unit, self.config.temperature * bias[items][..., None]], axis=-1)

  def new_item_vectors(self, items: jax.Array, rows: dict[str, jax.Array]) -> jax.Array:
    """[M] ids of items added after training and their feature rows (`ItemEncoder.from_features`)
    -> [M, S] vectors as `item_vectors` gives them; with the item bias, their bias is 0."""
    unit = self.tokenizer.item_encoder.from_features(items, rows)
    if not self.config.item_bias:
      return unit
    return jnp.concatenate([unit, jnp.zeros(unit.shape[:-1] + (1,), unit.dtype)], axis=-1)

  def encode_items(self, items: jax.Array) -> jax.Array:
    """[...] item ids -> [..., D] their vectors (`model/item_encoder.py`), before normalising.

    The losses read items through it, so a step encodes only the items it scores.
    """
    return self.tokenizer.item_encoder(items)

  def repeat_tables(self) -> RepeatTables | None:
    """The tables of h, the retrieval logit bias on history items (`model/repeats.py`)."""
    return self.repeat_bias() if self.config.repeat_buckets else None

  def history_bias(self, items: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """h of each user's history items, for the query at the history's last action.

    Every other item's h is 0, so these are all of a catalogue's non-zero h.

    Args:
      items: [B, L] right-padded item ids.
      lengths: [B] valid positions.

    Returns:
      ([B, L] the items, 0 but at each item's last occurrence; [B, L, O + 1] their h per
      condition, 0 where the item is).
    """
    anchors = lengths[:, None] - 1  # [B, 1]
    last, count = occurrences(items, items[:, None, :], anchors)
    last, count = last[:, 0], count[:, 0]
    latest = last == jnp.arange(items.shape[1])
    bias = self.repeat_bias()(anchors - last, count)
    return jnp.where(latest, items, 0), jnp.where(latest[..., None], bias, 0.0)

  def task_logits(self, states: jax.Array, items: jax.Array) -> jax.Array:
    """[..., W] states of masked tokens and [...] their items -> [..., O] outcome logits."""
    return self.task_heads(states, l2_normalize(self.encode_items(items)))

  def __call__(
    self, batch: TrainBatch, action_masked: jax.Array, deterministic: bool = False
  ) -> TrainOutputs:
    """The blended pass: history tokens and every slate's candidates at once.

    It is the training pass, so dropout is on unless `deterministic`; with a
    non-zero `dropout_rate` it then needs a "dropout" rng.
    """
    states, cache = self.encode(
      batch.items,
      batch.outcomes,
      batch.times,
      batch.surfaces,
      batch.history_lengths,
      action_masked,
      deterministic,
    )
    b, s, c = batch.slate_items.shape

    def per_candidate(x):
      return jnp.broadcast_to(x[:, :, None], (b, s, c)).reshape(b, s * c)

    candidate_states = self.candidate_states(
      cache,
      batch.times,
      batch.slate_items.reshape(b, s * c),
      per_candidate(batch.slate_times),
      per_candidate(batch.slate_surfaces),
      per_candidate(batch.slate_prefix),
      deterministic,
    )
    # The losses take the unit queries and add the item bias to the logits themselves.
    conditions = jnp.arange(self.config.num_conditions)
    queries = self.retrieval_head(states[:, :, None, :], conditions[None, None, :])
    offset_queries = None
    if self.config.num_offsets > 1:
      offsets = jnp.arange(1, self.config.num_offsets)
      offset_queries = self.retrieval_head(states[:, :, None, :], jnp.zeros_like(offsets), offsets)
    candidate_logits = self.task_logits(candidate_states, batch.slate_items.reshape(b, s * c))
    return TrainOutputs(
      queries=queries,
      offset_queries=offset_queries,
      item_bias=self.tokenizer.item_encoder.biases(whole_table=True),
      repeat_tables=self.repeat_tables(),
      history_task_logits=self.task_logits(states, batch.items),
      candidate_task_logits=candidate_logits.reshape(b, s, c, self.config.num_outcomes),
    )
