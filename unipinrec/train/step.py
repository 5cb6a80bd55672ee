"""The pure train step: masking, the blended forward pass, the three losses, one update."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from unipinrec import history_loss, losses, positives
from unipinrec.config import StepConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import TrainState
from unipinrec.types import TrainBatch


def blended_loss(
  params,
  model: UniPinRec,
  config: StepConfig,
  batch: TrainBatch,
  item_log_frequency: jax.Array,
  rng: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of retrieval, MAM and ranking losses on one blended batch."""
  loss_cfg = config.loss
  mask_rng, negative_rng = jax.random.split(rng)
  dropout_rng = jax.random.fold_in(rng, 2)  # apart from the split: other draws stay as they were
  b, length = batch.items.shape
  valid = jnp.arange(length)[None, :] < batch.history_lengths[:, None]
  action_masked = jax.random.bernoulli(mask_rng, config.mask_prob, (b, length)) & valid
  outputs = model.apply({"params": params}, batch, action_masked, rngs={"dropout": dropout_rng})

  def item_vectors(items: jax.Array) -> jax.Array:
    return model.apply({"params": params}, items, method=model.encode_items)

  positions, positive_valid = positives.future_positives(
    batch.items,
    batch.times,
    batch.history_lengths,
    loss_cfg.future_window_seconds,
    loss_cfg.max_future_positives,
    loss_cfg.intra_session,
  )
  positive_items = positives.gather_positions(batch.items, positions)
  # The batch's items encoded once: positives and history negatives are later or earlier
  # actions of the same rows, so they read these, not the (row-sharded) item table again.
  history_vectors = item_vectors(batch.items)
  # Condition 0 ("any") learns every positive, condition o + 1 those with outcome o; without
  # outcome conditions the "any" query is the only one trained.
  queries = outputs.queries
  positive_weights = positive_valid[..., None]
  if loss_cfg.outcome_conditions:
    positive_outcomes = positives.gather_positions(batch.outcomes, positions)
    positive_weights = jnp.concatenate(
      [positive_weights, positive_outcomes & positive_weights], axis=-1
    )
  else:
    queries = queries[:, :, :1]
  positive_weights = positive_weights.astype(jnp.float32)
  negatives, log_q = losses.sample_negatives(
    negative_rng,
    batch.items,
    item_log_frequency,
    loss_cfg.num_random_negatives,
    loss_cfg.num_inbatch_negatives,
    loss_cfg.logq_correction,
    loss_cfg.full_softmax,
  )
  seen = losses.seen_negatives(batch.items, negatives) if loss_cfg.exclude_seen_negatives else None
  positive_bias = history_lse = None
  if outputs.repeat_tables is not None:
    trained = queries.shape[2]  # the conditions trained: all, or "any" alone
    positive_bias = history_loss.positive_history_bias(
      outputs.repeat_tables, batch.items, positive_items
    )[..., :trained]
    if seen is None:  # history items enter exactly, so the negatives leave them out
      seen = losses.seen_negatives(batch.items, negatives)
      history_lse = history_loss.history_logsumexp(
        outputs.repeat_tables,
        queries,
        history_vectors,
        batch.items,
        losses.counted_positives(positive_items, positive_weights),
        model.config.temperature,
        outputs.item_bias,
      )
  retrieval = losses.sampled_softmax_loss(
    queries,
    item_vectors,
    positive_items,
    positive_weights,
    negatives,
    log_q,
    model.config.temperature,
    loss_cfg.kernel,
    seen,
    outputs.item_bias,
    loss_cfg.chunk_anchors,
    positive_bias,
    history_lse,
    positives.gather_positions(history_vectors, positions),
  )
  metrics = {}
  if outputs.offset_queries is not None:
    # Multi-token generation: the "any" query at offset t learns the actions
    # t seconds ahead (`positives.offset_positives`), at every
    # `offset_anchor_stride`-th anchor only (each offset costs as much as a
    # condition per anchor it is learned at). The offset queries learn without the history
    # bias h: multi-token generation leaves history items out.
    stride = loss_cfg.offset_anchor_stride
    offset_positions, offset_valid = positives.offset_positives(
      batch.times,
      batch.history_lengths,
      model.config.offsets_seconds[1:],
      loss_cfg.offset_window_seconds,
      loss_cfg.max_future_positives if loss_cfg.offset_window_seconds > 0 else 1,
    )
    offset_positions, offset_valid = offset_positions[:, ::stride], offset_valid[:, ::stride]
    anchors, num_offsets, width = offset_positions.shape[1:]
    offset_items = positives.gather_positions(batch.items, offset_positions).reshape(
      b, anchors, num_offsets * width
    )
    offset_vectors = positives.gather_positions(history_vectors, offset_positions).reshape(
      b, anchors, num_offsets * width, -1
    )
    # Offset t's positives weigh on query t only: [B, L', T * W, T].
    offset_weights = (
      offset_valid[..., None] * jnp.eye(num_offsets, dtype=jnp.float32)[:, None, :]
    ).reshape(b, anchors, num_offsets * width, num_offsets)
    metrics["offset_loss"] = losses.sampled_softmax_loss(
      outputs.offset_queries[:, ::stride],
      item_vectors,
      offset_items,
      offset_weights,
      negatives,
      # A share of 0 drops the correction outright: 0 x log(0) of a padding negative is NaN.
      loss_cfg.offset_logq_strength * log_q
      if loss_cfg.offset_logq_strength
      else jnp.zeros_like(log_q),
      model.config.temperature,
      loss_cfg.kernel,
      None if seen is None else seen[:, ::stride],
      outputs.item_bias,
      loss_cfg.chunk_anchors,
      positive_vectors=offset_vectors,
    )
    offset_term = loss_cfg.offset_weight * metrics["offset_loss"]
  else:
    offset_term = 0.0
  exclusive = model.config.exclusive_outcomes
  mam = losses.outcome_loss(outputs.history_task_logits, batch.outcomes, action_masked, exclusive)
  candidate_valid = (batch.slate_items > 0) & (batch.slate_prefix > 0)[..., None]
  ranking = losses.outcome_loss(
    outputs.candidate_task_logits, batch.slate_outcomes, candidate_valid, exclusive
  )
  total = (
    loss_cfg.retrieval_weight * retrieval
    + offset_term
    + loss_cfg.mam_weight * mam
    + loss_cfg.ranking_weight * ranking
  )
  return total, {
    "loss": total,
    "retrieval_loss": retrieval,
    "mam_loss": mam,
    "ranking_loss": ranking,
    **metrics,
  }


def make_train_step(
  model: UniPinRec,
  optimizer: optax.GradientTransformation,
  config: StepConfig,
  base_rng: jax.Array,
) -> Callable[[TrainState, TrainBatch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
  """A pure step; its randomness is `fold_in(base_rng, step)`, so a resumed run repeats it."""

  def train_step(state: TrainState, batch: TrainBatch, item_log_frequency: jax.Array):
    rng = jax.random.fold_in(base_rng, state.step)
    grad_fn = jax.value_and_grad(blended_loss, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, model, config, batch, item_log_frequency, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
