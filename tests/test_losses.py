"""The losses against NumPy references on small hand-made cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unipinrec import losses, positives
from unipinrec.config import StepConfig
from unipinrec.model.config import ModelConfig
from unipinrec.model.unified import UniPinRec
from unipinrec.train.state import example_batch, initial_params
from unipinrec.train.step import blended_loss


def _rows(table):
  """The loss's item-vector lookup over a fixed table."""
  return lambda ids: jnp.take(jnp.asarray(table), ids, axis=0)


def test_future_positives_by_hand():
  # Times in seconds; the window is 100 s; the next action always counts.
  times = np.array([[0.0, 10.0, 50.0, 500.0, 520.0, 0.0]], np.float32)
  items = np.array([[1, 2, 3, 4, 5, 0]], np.int32)
  lengths = np.array([5], np.int32)
  positions, valid = positives.future_positives(items, times, lengths, 100.0, max_positives=3)
  expected_valid = np.array(
    [
      [True, True, False],  # 0: +10 s, +50 s, +500 s (out of window)
      [True, False, False],  # 1: +40 s, +490, +510
      [True, False, False],  # 2: the next (+450 s) always counts
      [True, False, False],  # 3: +20 s; position 5 is padding
      [False, False, False],  # 4: the last action has no future
      [False, False, False],  # 5: padding
    ]
  )
  np.testing.assert_array_equal(valid[0], expected_valid)
  np.testing.assert_array_equal(positions[0, 1], [2, 3, 4])


def test_gather_positions_reads_each_rows_own_positions():
  values = np.arange(2 * 5 * 3).reshape(2, 5, 3)  # [B, L, D]
  positions = np.array([[[1, 2], [4, 4]], [[0, 3], [2, 1]]])  # [B, 2, 2]
  got = np.asarray(positives.gather_positions(jnp.asarray(values), jnp.asarray(positions)))
  want = np.stack([values[b][positions[b]] for b in range(2)])
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(
    positives.gather_positions(jnp.asarray(values[..., 0]), jnp.asarray(positions)), want[..., 0]
  )


def test_intra_session_relaxation_accepts_the_whole_session():
  # Two sessions: actions 0-2 (gaps under 30 min), then 3 after a day.
  times = np.array([[0.0, 1000.0, 2000.0, 90000.0]], np.float32)
  items = np.array([[1, 2, 3, 4]], np.int32)
  lengths = np.array([4], np.int32)
  _, strict = positives.future_positives(items, times, lengths, 60.0, 3)
  _, relaxed = positives.future_positives(items, times, lengths, 60.0, 3, intra_session=True)
  np.testing.assert_array_equal(strict[0, 0], [True, False, False])
  np.testing.assert_array_equal(relaxed[0, 0], [True, True, False])  # not the next session
  np.testing.assert_array_equal(relaxed[0, 1], [True, False, False])


def _reference_sampled_softmax(
  queries, vectors, pos_items, pos_weights, neg_items, neg_logq, temp, history=None, bias=None
):
  """Loop-by-loop: -log(e^p / (e^p + sum over usable negatives of e^(n - logq))).

  With `history` ([B, L] items), an item among history[b, :t + 1] is no negative of anchor t.
  With `bias` ([N + 1]), item i's logit is cosine / temp + bias[i], positive or negative.
  """
  if bias is None:
    bias = np.zeros(len(vectors))
  total, weight_sum = 0.0, 0.0
  b_size, l_size, w_size, q_size = pos_weights.shape
  for b in range(b_size):
    for t in range(l_size):
      counted = {int(pos_items[b, t, w]) for w in range(w_size) if pos_weights[b, t, w].sum() > 0}
      if history is not None:
        counted |= {int(i) for i in history[b, : t + 1]}
      for q in range(q_size):
        query = queries[b, t, q]
        negatives = [
          query @ vectors[m] / temp + bias[m] - lq
          for m, lq in zip(neg_items, neg_logq, strict=True)
          if m > 0 and int(m) not in counted
        ]
        for w in range(w_size):
          weight = pos_weights[b, t, w, q]
          if weight == 0:
            continue
          positive = query @ vectors[pos_items[b, t, w]] / temp + bias[pos_items[b, t, w]]
          logits = np.array([positive] + negatives)
          loss = -(positive - (np.max(logits) + np.log(np.sum(np.exp(logits - np.max(logits))))))
          total += weight * loss
          weight_sum += weight
  return total / max(weight_sum, 1.0)


def _unit_items_and_queries(rng, num_items, query_shape, dim):
  """Random unit vectors: [num_items + 1, dim] items (row 0 padding) and [*query_shape, dim]."""
  vectors = rng.standard_normal((num_items + 1, dim)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  queries = rng.standard_normal((*query_shape, dim)).astype(np.float32)
  queries /= np.linalg.norm(queries, axis=-1, keepdims=True)
  return vectors, queries


def _loss_problem(seed: int, negatives: list[int]):
  """9 unit items, [2, 3, 2 conditions] unit queries, 2 weighted positives per anchor, and the
  `negatives` (0: unusable) plus one of the positives, with random log-Q."""
  rng = np.random.default_rng(seed)
  b, t, w, q, d, n = 2, 3, 2, 2, 4, 9
  vectors, queries = _unit_items_and_queries(rng, n, (b, t, q), d)
  pos_items = rng.integers(1, n + 1, (b, t, w)).astype(np.int32)
  pos_weights = (rng.random((b, t, w, q)) < 0.7).astype(np.float32)
  # A negative that is one of an anchor's positives must be dropped from that anchor's softmax.
  neg_items = np.array(negatives + [int(pos_items[1, 2, 1])], np.int32)
  neg_logq = rng.standard_normal(len(neg_items)).astype(np.float32)
  return rng, vectors, queries, pos_items, pos_weights, neg_items, neg_logq


def test_sampled_softmax_matches_reference():
  rng, vectors, queries, pos_items, pos_weights, neg_items, neg_logq = _loss_problem(
    0, [0, 3, 5, 7, 9]
  )
  n = len(vectors) - 1
  # The table's rows at any scale: the loss scores them as unit vectors.
  table = vectors * rng.uniform(0.1, 3.0, (n + 1, 1)).astype(np.float32)
  got = losses.sampled_softmax_loss(
    queries, _rows(table), pos_items, pos_weights, neg_items, neg_logq, 0.5
  )
  want = _reference_sampled_softmax(
    queries, vectors, pos_items, pos_weights, neg_items, neg_logq, 0.5
  )
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("kernel,chunk", [("xla", 0), ("xla", 4), ("pallas", 0)])
def test_item_bias_is_added_to_every_logit(kernel, chunk):
  rng, vectors, queries, pos_items, pos_weights, neg_items, neg_logq = _loss_problem(
    3, [0, 2, 4, 6, 8]
  )
  bias = rng.standard_normal(len(vectors)).astype(np.float32)
  args = (queries, vectors, pos_items, pos_weights, neg_items, neg_logq, 0.5)
  options = dict(kernel=kernel, chunk_anchors=chunk)
  loss_args = (queries, _rows(vectors), *args[2:])
  got = losses.sampled_softmax_loss(*loss_args, item_bias=bias, **options)
  want = _reference_sampled_softmax(*args, bias=bias)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  assert abs(want - _reference_sampled_softmax(*args)) > 1e-2  # the bias changed the loss
  # Its gradient matches the loss's own finite difference in one item's bias.
  grad = jax.grad(lambda c: losses.sampled_softmax_loss(*loss_args, item_bias=c, **options))(bias)
  step = np.zeros_like(bias)
  step[4] = 1e-2
  finite = (
    _reference_sampled_softmax(*args, bias=bias + step)
    - _reference_sampled_softmax(*args, bias=bias - step)
  ) / 2e-2
  np.testing.assert_allclose(float(grad[4]), finite, rtol=1e-3, atol=1e-5)


def test_seen_negatives_are_left_out():
  rng = np.random.default_rng(2)
  b, t, w, q, d, n = 2, 4, 1, 2, 4, 8
  vectors, queries = _unit_items_and_queries(rng, n, (b, t, q), d)
  history = np.array([[2, 5, 2, 7], [8, 1, 0, 0]], np.int32)  # row 1: two actions, then padding
  pos_items = np.array([[[5], [2], [7], [1]], [[1], [3], [3], [3]]], np.int32)
  pos_weights = np.ones((b, t, w, q), np.float32)
  pos_weights[1, 1:] = 0.0  # no future past the last action
  neg_items = np.array([0, 1, 2, 3, 5, 6, 7, 8], np.int32)
  neg_logq = rng.standard_normal(len(neg_items)).astype(np.float32)
  seen = np.asarray(losses.seen_negatives(history, neg_items))
  want_seen = np.array(
    [[[m > 0 and m in history[r, : a + 1] for m in neg_items] for a in range(t)] for r in range(b)]
  )
  np.testing.assert_array_equal(seen, want_seen)
  assert not seen[1, 3, 0]  # padding (0) is never a seen negative
  got = losses.sampled_softmax_loss(
    queries, _rows(vectors), pos_items, pos_weights, neg_items, neg_logq, 0.5, seen=seen
  )
  want = _reference_sampled_softmax(
    queries, vectors, pos_items, pos_weights, neg_items, neg_logq, 0.5, history=history
  )
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  plain = _reference_sampled_softmax(
    queries, vectors, pos_items, pos_weights, neg_items, neg_logq, 0.5
  )
  assert float(got) < plain - 1e-3  # fewer negatives: a smaller loss


def test_a_negative_chunk_is_refused():
  with pytest.raises(ValueError, match="chunk_anchors=-1: expected 0 .* or a positive count"):
    losses.LossConfig(chunk_anchors=-1)


def test_seen_negatives_need_the_xla_kernel():
  with pytest.raises(ValueError, match="exclude_seen_negatives needs step.loss.kernel='xla'"):
    losses.LossConfig(exclude_seen_negatives=True, kernel="pallas")


def test_sample_negatives_log_q_is_the_mixture_expectation():
  log_frequency = np.log(np.array([0.0, 0.5, 0.25, 0.125, 0.125], np.float32) + 1e-30)
  items = np.array([[1, 1, 2, 0]], np.int32)
  negatives, log_q = losses.sample_negatives(jax.random.key(0), items, log_frequency, 6, 4, True)
  assert negatives.shape == (10,)
  assert np.all((negatives[:6] >= 1) & (negatives[:6] <= 4))  # uniform part: never padding
  assert set(np.asarray(negatives[6:]).tolist()) <= {0, 1, 2}  # in-batch part: from the batch
  frequency = np.exp(log_frequency)[np.asarray(negatives)]
  np.testing.assert_allclose(np.exp(log_q), 4 * frequency + 6 / 4, rtol=1e-5)
  _, no_correction = losses.sample_negatives(jax.random.key(0), items, log_frequency, 6, 4, False)
  np.testing.assert_array_equal(no_correction, 0.0)


def test_cold_items_are_never_negatives():
  log_frequency = np.log(np.full(9, 1 / 8, np.float32))
  log_frequency[[3, 7]] = -np.inf  # held out of training
  items = np.array([[1, 2, 4, 5, 6, 8]], np.int32)
  negatives, log_q = losses.sample_negatives(jax.random.key(0), items, log_frequency, 400, 8, True)
  drawn = set(np.asarray(negatives).tolist())
  assert not drawn & {3, 7} and 0 in drawn and {1, 2, 4, 5, 6, 8} <= drawn
  assert np.all(np.isfinite(log_q))
  catalogue, _ = losses.sample_negatives(jax.random.key(0), items, log_frequency, 4, 4, True, True)
  np.testing.assert_array_equal(catalogue, [1, 2, 0, 4, 5, 6, 0, 8])


def test_full_softmax_is_the_exact_softmax_over_the_catalogue():
  rng = np.random.default_rng(1)
  n, d = 7, 4
  vectors = rng.standard_normal((n + 1, d)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  query = vectors[3] + 0.3 * rng.standard_normal(d).astype(np.float32)
  query /= np.linalg.norm(query)
  negatives, log_q = losses.sample_negatives(
    jax.random.key(0), np.array([[1]]), np.zeros(n + 1, np.float32), 5, 5, True, True
  )
  np.testing.assert_array_equal(negatives, np.arange(1, n + 1))
  got = losses.sampled_softmax_loss(
    query[None, None, None],
    _rows(vectors),
    np.array([[[3]]]),
    np.ones((1, 1, 1, 1)),
    negatives,
    log_q,
    0.5,
  )
  logits = vectors[1:] @ query / 0.5  # item 3 is the positive once, never its own negative
  np.testing.assert_allclose(float(got), -(logits[2] - np.log(np.exp(logits).sum())), rtol=1e-5)


def test_any_condition_alone_is_the_full_softmax_over_the_catalogue():
  # SASRec's cross-entropy: each anchor's next item against every catalogue item, "any" query.
  b, length, n, temperature = 2, 5, 9, 0.5
  model = UniPinRec(
    ModelConfig(
      num_items=n,
      num_outcomes=2,
      max_length=length,
      embed_dim=8,
      action_dim=4,
      num_layers=1,
      mlp_dim=16,
      head_hidden_dim=8,
      temperature=temperature,
      dropout_rate=0.0,
      offsets_seconds=(0.0,),
      relative_position_buckets=0,
      exclusive_outcomes=False,
    )
  )
  rng = np.random.default_rng(4)
  lengths = np.array([length, 3], np.int32)
  items = rng.integers(1, n + 1, (b, length)).astype(np.int32)
  items[np.arange(length)[None] >= lengths[:, None]] = 0
  # No slates: the variant trains none.
  batch = example_batch(model, b, 0, 4).replace(
    items=items,
    outcomes=rng.random((b, length, 2)) < 0.5,
    times=np.cumsum(rng.exponential(100.0, (b, length)), axis=1).astype(np.float32),
    history_lengths=lengths,
  )
  params = initial_params(model, batch)

  def step_metrics(outcome_conditions: bool) -> dict:
    loss = losses.LossConfig(
      softmax="full",
      future_window_seconds=0.0,
      max_future_positives=1,
      outcome_conditions=outcome_conditions,
      mam_weight=0.0,
      ranking_weight=0.0,
    )
    config = StepConfig(mask_prob=0.0, loss=loss)
    log_frequency = np.full(n + 1, -np.log(n), np.float32)
    # One compiled program: op by op, the step's hundreds of small ops each compile.
    loss_fn = jax.jit(lambda *args: blended_loss(args[0], model, config, *args[1:])[1])
    return loss_fn(params, batch, log_frequency, jax.random.key(1))

  got = step_metrics(False)
  outputs = model.apply({"params": params}, batch, jnp.zeros((b, length), bool))
  queries = np.asarray(outputs.queries[:, :, 0])
  table = np.asarray(
    model.apply({"params": params}, jnp.arange(1, n + 1), method=model.encode_items)
  )
  table = table / np.linalg.norm(table, axis=1, keepdims=True)
  want = []
  for row in range(b):
    for t in range(lengths[row] - 1):
      logits = table @ queries[row, t] / temperature
      target = logits[items[row, t + 1] - 1]
      want.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - target)
  np.testing.assert_allclose(float(got["retrieval_loss"]), np.mean(want), rtol=1e-5)
  np.testing.assert_allclose(float(got["loss"]), np.mean(want), rtol=1e-5)
  # With the conditions, the outcome queries' losses join the mean: another figure.
  assert abs(float(step_metrics(True)["retrieval_loss"]) - np.mean(want)) > 1e-4


def test_masked_bce_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((3, 4, 2)).astype(np.float32)
  labels = rng.random((3, 4, 2)) < 0.4
  mask = rng.random((3, 4)) < 0.5
  mask[0, 0] = True
  p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  bce = -(labels * np.log(p) + (~labels) * np.log(1.0 - p))
  want = bce[mask].sum() / (mask.sum() * 2)
  got = losses.masked_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  assert float(losses.masked_bce(logits, labels, np.zeros_like(mask))) == 0.0


def test_masked_exclusive_ce_matches_numpy():
  rng = np.random.default_rng(2)
  logits = rng.standard_normal((3, 4, 2)).astype(np.float32)
  # At most one outcome per row (an action has one); all False is "none".
  labels = np.eye(3, dtype=bool)[rng.integers(0, 3, (3, 4))][..., 1:]
  mask = rng.random((3, 4)) < 0.6
  mask[0, 0] = True
  with_none = np.concatenate([np.zeros((3, 4, 1)), logits.astype(np.float64)], axis=-1)
  log_p = with_none - np.log(np.exp(with_none).sum(-1, keepdims=True))
  classes = np.where(labels.any(-1), labels.argmax(-1) + 1, 0)
  nll = -np.take_along_axis(log_p, classes[..., None], axis=-1)[..., 0]
  want = nll[mask].sum() / (mask.sum() * 2)
  got = losses.masked_exclusive_ce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  assert float(losses.masked_exclusive_ce(logits, labels, np.zeros_like(mask))) == 0.0
  # One outcome: the softmax against none is the sigmoid, so the two losses agree (x 1).
  one = losses.masked_exclusive_ce(logits[..., :1], labels[..., :1], mask)
  np.testing.assert_allclose(
    float(one), float(losses.masked_bce(logits[..., :1], labels[..., :1], mask)), rtol=1e-5
  )
