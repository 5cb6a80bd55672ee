"""Pallas kernels against their pure-JAX references: forward and gradients, ragged and empty rows.

On CPU the kernels run in Pallas interpret mode; with JAX_PLATFORMS=cuda the
same tests compile them with Triton. Matmuls run at the highest precision so
that both sides are float32 (TF32 would otherwise differ on GPU).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import bench_kernels as bench
from kernels import attention, check_kernel, chunked_softmax, sampled_softmax
from kernels import candidate_attention as pallas_attention
from unipinrec.model.config import ModelConfig

TOL = dict(rtol=2e-5, atol=2e-5)


@pytest.fixture(autouse=True)
def _float32_matmuls():
  with jax.default_matmul_precision("highest"):
    yield


def _normal(rng, shape):
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _assert_trees_close(actual, expected):
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, e, **TOL)


# (seed, users B, candidates C, history L, heads H, head dim Dh, candidate tile, history tile)
# Each shape with one relative-bias table (0: none): every edge and every table size once,
# as each case compiles its interpret-mode kernel anew.
ATTENTION_CASES = [
  (0, 2, 20, 37, 2, 12, 16, 16, 20),  # C, L, Dh none a multiple of the tiles or a power of 2
  (1, 1, 16, 16, 1, 16, 16, 16, 0),  # exactly one tile each
  (2, 3, 5, 70, 2, 8, 64, 32, 8),  # fewer candidates than a tile; three history tiles
  (3, 2, 33, 9, 3, 4, 16, 64, 20),  # history shorter than a tile
]


def _bias_table(rng, heads, num_buckets):
  """A random recency-bias table, or none: large enough that a wrong bucket shows."""
  return _normal(rng, (heads, num_buckets)) if num_buckets else None


@pytest.mark.parametrize("seed,b,c,l,h,d,bc,bl,num_buckets", ATTENTION_CASES)
def test_candidate_attention_matches_reference(seed, b, c, l, h, d, bc, bl, num_buckets):
  rng = np.random.default_rng(seed)
  q, k, v = (_normal(rng, (b, c, h, d)) for _ in range(3))
  history_keys, history_values = (_normal(rng, (b, l, h, d)) for _ in range(2))
  prefix = rng.integers(0, l + 1, (b, c))
  prefix[0, : c // 2] = 0  # candidates that see no history: only their own key
  prefix[-1, -1] = l
  prefix = jnp.asarray(prefix, jnp.int32)
  cotangent = _normal(rng, (b, c, h, d))
  table = _bias_table(rng, h, num_buckets)

  def loss(fn, **kwargs):
    def f(q, k, v, keys, values, table):
      out = fn(q, k, v, keys, values, prefix, table, l, **kwargs)
      return jnp.sum(out * cotangent), out

    # Jitted: interpret mode then runs as one compiled XLA program, not op by op.
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4, 5), has_aux=True))(
      q, k, v, history_keys, history_values, table
    )

  (_, out), grads = loss(
    pallas_attention.candidate_attention, block_candidates=bc, block_history=bl
  )
  (_, expected), expected_grads = loss(attention.candidate_attention)
  _assert_trees_close(out, expected)
  _assert_trees_close(grads, expected_grads)
  # Prefix 0 means exactly the candidate's own value.
  np.testing.assert_allclose(out[0, 0], v[0, 0], **TOL)
  if num_buckets:  # the table's gradient is compared above; it must reach distant buckets too
    assert np.count_nonzero(grads[5]) > h


@pytest.mark.parametrize("seed,lengths,num_buckets", [(0, (37, 5, 1), 8), (1, (16, 16, 0), 0)])
def test_causal_attention_matches_reference_on_valid_rows(seed, lengths, num_buckets):
  rng = np.random.default_rng(seed)
  lengths = jnp.asarray(lengths, jnp.int32)
  b, l, h, d = len(lengths), max(int(lengths.max()), 1), 2, 8
  q, k, v = (_normal(rng, (b, l, h, d)) for _ in range(3))
  valid = (jnp.arange(l)[None, :] < lengths[:, None])[:, :, None, None]
  # Rows past a length are meaningless in both: a zero cotangent there, compared only where valid.
  cotangent = jnp.where(valid, _normal(rng, (b, l, h, d)), 0.0)
  table = _bias_table(rng, h, num_buckets)

  def loss(fn, **kwargs):
    def f(q, k, v, table):
      out = fn(q, k, v, lengths, relative_bias=table, max_distance=l, **kwargs)
      return jnp.sum(out * cotangent), jnp.where(valid, out, 0.0)

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, table)

  (_, out), grads = loss(pallas_attention.causal_attention, block_candidates=16, block_history=16)
  (_, expected), expected_grads = loss(attention.causal_attention)
  _assert_trees_close(out, expected)
  _assert_trees_close(grads, expected_grads)


# (seed, anchors A, conditions Q, dim D, negatives M, excluded W, catalogue, row tile, neg. tile)
SOFTMAX_SHAPES = [
  (0, 37, 3, 12, 100, 5, 30, 16, 16),  # nothing a multiple of a tile; many excluded hits
  (1, 8, 1, 16, 16, 1, 1000, 16, 16),  # one tile each
  (2, 50, 2, 8, 300, 8, 5000, 32, 64),  # several row chunks for the negatives' gradient
]


@pytest.mark.parametrize("seed,a,q,d,m,w,n,br,bm", SOFTMAX_SHAPES)
def test_negative_logsumexp_matches_reference(seed, a, q, d, m, w, n, br, bm):
  rng = np.random.default_rng(seed)
  queries = _normal(rng, (a, q, d))
  vectors = _normal(rng, (m, d))
  log_q = _normal(rng, (m,))
  items = rng.integers(0, n + 1, m)  # 0: unusable samples
  excluded = np.where(rng.random((a, w)) < 0.7, rng.choice(items, (a, w)), -1)
  items, excluded = jnp.asarray(items, jnp.int32), jnp.asarray(excluded, jnp.int32)
  cotangent = _normal(rng, (a, q))

  def loss(fn, **kwargs):
    def f(*args):
      lse = fn(*args, items, excluded, 0.5, **kwargs)
      return jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0) * cotangent), lse

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(queries, vectors, log_q)

  (_, lse), grads = loss(sampled_softmax.negative_logsumexp, block_rows=br, block_negatives=bm)
  (_, expected), expected_grads = loss(sampled_softmax.reference_negative_logsumexp)
  np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(expected))
  finite = np.isfinite(expected)
  np.testing.assert_allclose(np.asarray(lse)[finite], np.asarray(expected)[finite], **TOL)
  _assert_trees_close(grads, expected_grads)


@pytest.mark.parametrize("seed,a,q,d,m,w,n,chunk", [(*s[:7], s[7] - 3) for s in SOFTMAX_SHAPES])
def test_chunked_logsumexp_matches_reference(seed, a, q, d, m, w, n, chunk):
  """Chunks that do not divide the anchors, some anchors with every negative excluded."""
  rng = np.random.default_rng(seed)
  queries, vectors, log_q = _normal(rng, (a, q, d)), _normal(rng, (m, d)), _normal(rng, (m,))
  items = rng.integers(0, n + 1, m)  # 0: unusable samples
  excluded = np.where(rng.random((a, w)) < 0.7, rng.choice(items, (a, w)), -1)
  seen = rng.random((a, m)) < 0.3
  seen[0] = True  # anchor 0 has no usable negative: -inf, and no gradient
  items, excluded = jnp.asarray(items, jnp.int32), jnp.asarray(excluded, jnp.int32)
  cotangent = _normal(rng, (a, q))

  def loss(fn, **kwargs):
    def f(queries, vectors, log_q):
      lse = fn(queries, vectors, log_q, items, excluded, 0.5, excluded_mask=seen, **kwargs)
      return jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0) * cotangent), lse

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(queries, vectors, log_q)

  (_, lse), grads = loss(chunked_softmax.chunked_negative_logsumexp, chunk_anchors=chunk)
  (_, expected), expected_grads = loss(sampled_softmax.reference_negative_logsumexp)
  assert np.all(np.asarray(lse)[0] == -np.inf)
  np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(expected))
  finite = np.isfinite(expected)
  np.testing.assert_allclose(np.asarray(lse)[finite], np.asarray(expected)[finite], **TOL)
  _assert_trees_close(grads, expected_grads)
  assert np.all(np.isfinite(np.asarray(grads[0]))) and np.all(np.asarray(grads[0])[0] == 0.0)


@pytest.mark.parametrize("groups,chunk", [(1, 4), (2, 6), (4, 8)])
def test_chunked_logsumexp_scores_active_anchors_only(groups, chunk):
  """Anchors not `active` are -inf with no gradient; the others' values and all gradients are
  the reference's over the active anchors; chunks past the longest group's active anchors are
  skipped."""
  rng = np.random.default_rng(groups)
  a, q, d, m = 48, 2, 8, 40
  queries, vectors, log_q = _normal(rng, (a, q, d)), _normal(rng, (m, d)), _normal(rng, (m,))
  items = jnp.asarray(rng.integers(1, 60, m), jnp.int32)
  excluded = jnp.asarray(rng.integers(0, 60, (a, 2)), jnp.int32)
  active = rng.random(a) < 0.3
  active[:3] = True  # the first group has at least three
  cotangent = _normal(rng, (a, q))

  def loss(queries, vectors, log_q, active_only):
    scored = jnp.asarray(active if active_only else np.ones(a, bool))
    options = dict(chunk_anchors=chunk, active=scored, groups=groups)
    lse = chunked_softmax.chunked_negative_logsumexp(
      queries, vectors, log_q, items, excluded, 0.5, **options
    )
    kept = jnp.asarray(active)[:, None] & jnp.isfinite(lse)
    return jnp.sum(jnp.where(kept, lse * cotangent, 0.0)), lse

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
  (_, lse), grads = grad(queries, vectors, log_q, True)
  (_, every), expected_grads = grad(queries, vectors, log_q, False)
  expected = sampled_softmax.reference_negative_logsumexp(
    queries, vectors, log_q, items, excluded, 0.5
  )
  np.testing.assert_allclose(np.asarray(every), np.asarray(expected), **TOL)
  assert np.all(np.asarray(lse)[~active] == -np.inf)
  np.testing.assert_allclose(np.asarray(lse)[active], np.asarray(expected)[active], **TOL)
  _assert_trees_close(grads, expected_grads)
  assert np.all(np.asarray(grads[0])[~active] == 0.0)
  longest = active.reshape(groups, -1).sum(1).max()
  deal = chunked_softmax._Deal(jnp.asarray(active), groups, chunk)
  assert int(deal.live.sum()) == -(-longest // (chunk // groups)) < deal.live.size


def test_all_excluded_anchor_is_minus_infinity_with_zero_gradient():
  rng = np.random.default_rng(0)
  queries, vectors = _normal(rng, (2, 1, 8)), _normal(rng, (4, 8))
  items = jnp.asarray([3, 0, 3, 7], jnp.int32)
  excluded = jnp.asarray([[3, 7], [-1, -1]], jnp.int32)

  def total(queries):
    lse = sampled_softmax.negative_logsumexp(queries, vectors, jnp.zeros(4), items, excluded, 1.0)
    return jnp.sum(jax.nn.softplus(lse)), lse

  grad, lse = jax.jit(jax.grad(total, has_aux=True))(queries)
  assert lse[0, 0] == -np.inf
  logits = np.asarray(queries[1, 0] @ vectors[np.array([0, 2, 3])].T)
  np.testing.assert_allclose(lse[1, 0], np.log(np.exp(logits).sum()), **TOL)
  np.testing.assert_array_equal(grad[0], 0.0)


def test_sampled_softmax_loss_is_the_same_with_either_kernel():
  losses = pytest.importorskip("unipinrec.losses")  # needs optax and flax
  rng = np.random.default_rng(3)
  b, l, q, d, w, m, n = 2, 6, 3, 8, 4, 40, 20
  queries = _normal(rng, (b, l, q, d))
  item_vectors = _normal(rng, (n + 1, d))
  positive_items = jnp.asarray(rng.integers(1, n + 1, (b, l, w)), jnp.int32)
  positive_weights = jnp.asarray(rng.random((b, l, w, q)) < 0.5, jnp.float32)
  negative_items = jnp.asarray(rng.integers(0, n + 1, m), jnp.int32)
  log_q = _normal(rng, (m,))

  def loss(kernel):
    def f(queries, item_vectors):
      rows = lambda ids: jnp.take(item_vectors, ids, axis=0)  # noqa: E731
      return losses.sampled_softmax_loss(
        queries, rows, positive_items, positive_weights, negative_items, log_q, 0.1, kernel
      )

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(queries, item_vectors)

  _assert_trees_close(loss("pallas"), loss("xla"))


@pytest.mark.slow  # about a minute: the whole model, twice, in interpret mode
def test_blended_train_loss_is_the_same_with_either_kernel():
  pytest.importorskip("flax")
  from unipinrec.config import StepConfig
  from unipinrec.losses import LossConfig
  from unipinrec.model.unified import UniPinRec
  from unipinrec.train.state import example_batch, initial_params
  from unipinrec.train.step import blended_loss

  b, l, s, c, n = 2, 12, 3, 4, 40
  rng = np.random.default_rng(0)
  lengths = np.array([l, 5])
  items = rng.integers(1, n + 1, (b, l)).astype(np.int32)
  items[np.arange(l)[None] >= lengths[:, None]] = 0
  batch = example_batch(
    UniPinRec(
      ModelConfig(
        num_items=n,
        num_outcomes=2,
        max_length=l,
        dropout_rate=0.0,
        offsets_seconds=(0.0,),
        relative_position_buckets=0,
        exclusive_outcomes=False,
      )
    ),
    b,
    s,
    c,
  ).replace(
    items=jnp.asarray(items),
    outcomes=jnp.asarray(rng.random((b, l, 2)) < 0.5),
    times=jnp.asarray(np.cumsum(rng.exponential(3000.0, (b, l)), axis=1), jnp.float32),
    history_lengths=jnp.asarray(lengths, jnp.int32),
    slate_prefix=jnp.asarray([[0, 3, 12], [1, 5, 0]], jnp.int32),
    slate_items=jnp.asarray(rng.integers(0, n + 1, (b, s, c)), jnp.int32),
    slate_outcomes=jnp.asarray(rng.random((b, s, c, 2)) < 0.5),
  )
  item_log_frequency = jnp.full((n + 1,), -np.log(n), jnp.float32)

  def loss_and_grads(kernel):
    model = UniPinRec(
      ModelConfig(
        num_items=n,
        num_outcomes=2,
        max_length=l,
        embed_dim=8,
        action_dim=8,
        num_layers=1,
        kernel=kernel,
        relative_position_buckets=4,
        dropout_rate=0.0,
        offsets_seconds=(0.0,),
        exclusive_outcomes=False,
        repeat_buckets=0,  # the Pallas softmax takes no history candidates
      )
    )
    params = initial_params(model, batch)
    # Perturbed, so that the zero-initialised residual branches carry gradients too.
    params = jax.tree.map(
      lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params
    )
    config = StepConfig(
      loss=LossConfig(num_random_negatives=16, num_inbatch_negatives=16, kernel=kernel)
    )
    step = jax.jit(jax.value_and_grad(blended_loss, has_aux=True), static_argnums=(1, 2))
    return step(params, model, config, batch, item_log_frequency, jax.random.key(1))

  (loss, metrics), grads = loss_and_grads("pallas")
  (expected_loss, expected_metrics), expected_grads = loss_and_grads("xla")
  _assert_trees_close((loss, metrics), (expected_loss, expected_metrics))
  _assert_trees_close(grads, expected_grads)


def test_unknown_kernel_is_refused_with_the_choices():
  with pytest.raises(ValueError, match=r"kernel must be one of \('xla', 'pallas'\), got 'triton'"):
    check_kernel("triton")
  with pytest.raises(ValueError, match="kernel must be one of"):
    ModelConfig(
      num_items=5,
      num_outcomes=1,
      kernel="cuda",
      dropout_rate=0.0,
      offsets_seconds=(0.0,),
      relative_position_buckets=0,
      exclusive_outcomes=False,
    )


def test_bench_small_runs_every_implementation_with_consistent_rates(capsys):
  results = bench.main(["--small", "--repeats", "2", "--chunk_anchors", "16"])
  names = [(r.operation, r.implementation) for r in results]
  assert names == [(op, impl) for op in ("serving", "training") for impl in ("pallas", "xla")] + [
    (op, impl) for op in ("softmax", "softmax+grad") for impl in ("pallas", "xla", "chunked")
  ]
  for operation in ("serving", "training", "softmax", "softmax+grad"):
    timings = [r for r in results if r.operation == operation]
    # The same useful work is credited to each, so only their times differ.
    assert len({(r.flops, r.bytes) for r in timings}) == 1 and timings[0].flops > 0
    assert all(r.seconds > 0 for r in timings)
  assert "TFLOP/s" in capsys.readouterr().out


def test_bench_small_with_the_recency_bias_checks_each_implementation_against_xla(capsys):
  results = bench.main(["--small", "--repeats", "1", "--relative_buckets", "8", "--check"])
  assert len(results) == 10  # every operation compiled and ran with each of its implementations
  checks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check ")]
  assert [line.split(" = ")[0] for line in checks] == [
    f"check {op}: max |{impl} - xla| / max |xla|"
    for op, impls in (
      ("serving", ["pallas"]),
      ("training", ["pallas"]),
      ("softmax", ["chunked", "pallas"]),
      ("softmax+grad", ["chunked", "pallas"]),
    )
    for impl in impls
  ]
  for line in checks:
    errors = [float(x) for x in line.split("=")[1].strip(" []").split(",")]
    assert max(errors) < 1e-4, line
