"""Times each Pallas kernel against its XLA reference and compares both with the device's peaks.

  python -m experiments.bench_kernels [--small] [--check] [--repeats=10] [--chunk_anchors=256]

Operations, at realistic sizes (--small shrinks them so that the whole run,
Pallas in interpret mode included, takes seconds on a CPU):
  serving     candidate attention of 512 candidates per user on a 12-layer
              KV cache of ragged histories (length up to 1024), forward.
  training    the blended attention of 12 layers: causal over 1024-long
              ragged histories, then 512 slate candidates on random request
              prefixes; forward and backward.
  softmax     the sampled softmax's negative log-sum-exp: 16 x 1024 anchors,
              3 conditions, 8192 negatives, 8 excluded positives per anchor;
              forward, and forward and backward.

The softmax also runs as "chunked": the reference a chunk of --chunk_anchors
anchors at a time, in plain JAX (kernels/chunked_softmax.py).

Each is compiled first, then timed as the median of --repeats blocking calls.
FLOPs are the useful ones, the same count for kernel and reference: 4 Dh per
visible (query, key) pair in attention (2 Dh for the logits, 2 Dh for the
values), 2 D per (row, negative) logit; a backward pass counts twice its
forward (the gradients' matmuls), not the kernels' recomputation. Bytes are
the least any implementation must move: inputs read once (history keys and
values only up to each user's length), outputs written once. The peaks are
measured in the same run (unipinrec/bench/timing.py): the best float32 matmul rate
at JAX's default precision (TF32 on recent NVIDIA GPUs, which Triton's dot
also uses) and a large elementwise copy. With --check each implementation's
outputs and gradients are compared with the reference's at the benchmark's sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels import attention, chunked_softmax, default_interpret, sampled_softmax
from kernels import candidate_attention as pallas_attention
from unipinrec.bench import timing

_F32 = 4  # bytes


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The benchmark's shapes."""

  users: int = 16
  history: int = 1024
  candidates: int = 512
  layers: int = 12
  heads: int = 4
  head_dim: int = 64
  training_users: int = 8
  anchors: int = 16 * 1024
  conditions: int = 3
  negatives: int = 8192
  excluded: int = 8
  embed_dim: int = 64
  matmul_sizes: tuple[int, ...] = (2048, 4096, 8192)
  copy_bytes: int = 1 << 30
  relative_buckets: int = 0  # the attention's learned recency bias (its table's buckets); 0: off


SMALL = Sizes(
  users=2,
  history=64,
  candidates=32,
  layers=2,
  heads=2,
  head_dim=16,
  training_users=2,
  anchors=64,
  conditions=2,
  negatives=128,
  excluded=4,
  embed_dim=16,
  matmul_sizes=(128, 256),
  copy_bytes=1 << 22,
)


@dataclasses.dataclass(frozen=True)
class Timing:
  """One implementation of one operation."""

  operation: str
  implementation: str  # "pallas", "xla" or "chunked" (the softmax only)
  seconds: float  # median of the timed calls
  flops: float
  bytes: float

  def row(self, peak_flops: float, peak_bytes: float) -> str:
    flop_rate, byte_rate = self.flops / self.seconds, self.bytes / self.seconds
    return (
      f"{self.operation:<16} {self.implementation:<7} {self.seconds * 1e3:>9.3f} "
      f"{flop_rate / 1e12:>8.2f} {100 * flop_rate / peak_flops:>7.1f} "
      f"{byte_rate / 1e9:>8.1f} {100 * byte_rate / peak_bytes:>7.1f}"
    )


HEADER = (
  f"{'operation':<16} {'impl':<7} {'ms':>9} {'TFLOP/s':>8} {'% peak':>7} {'GB/s':>8} {'% peak':>7}"
)


def _normal(rng: np.random.Generator, shape) -> jax.Array:
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


def attention_inputs(sizes: Sizes, users: int, seed: int = 0) -> dict[str, jax.Array]:
  """Per-layer candidate q/k/v [layers, B, C, H, Dh], the KV cache, ragged lengths and prefixes."""
  rng = np.random.default_rng(seed)
  per_layer_candidates = (sizes.layers, users, sizes.candidates, sizes.heads, sizes.head_dim)
  per_layer_history = (sizes.layers, users, sizes.history, sizes.heads, sizes.head_dim)
  lengths = rng.integers(1, sizes.history + 1, users)
  return {
    "q": _normal(rng, per_layer_candidates),
    "k": _normal(rng, per_layer_candidates),
    "v": _normal(rng, per_layer_candidates),
    "history_q": _normal(rng, per_layer_history),
    "history_keys": _normal(rng, per_layer_history),
    "history_values": _normal(rng, per_layer_history),
    "lengths": jnp.asarray(lengths, jnp.int32),
    # Serving: every candidate sees the whole history; training: a random request point.
    "serving_prefix": jnp.asarray(np.repeat(lengths[:, None], sizes.candidates, 1), jnp.int32),
    "slate_prefix": jnp.asarray(
      rng.integers(0, lengths[:, None] + 1, (users, sizes.candidates)), jnp.int32
    ),
    # Per-layer [H, buckets] tables, or none: jit takes None as an argument without leaves.
    "relative_bias": (
      _normal(rng, (sizes.layers, sizes.heads, sizes.relative_buckets))
      if sizes.relative_buckets
      else None
    ),
  }


def _bias(table: jax.Array | None, i: int, max_distance: int) -> dict:
  """Layer i's recency-bias arguments of either implementation's attention."""
  return {"relative_bias": None if table is None else table[i], "max_distance": max_distance}


def serving_fn(impl, max_distance: int) -> Callable:
  """Every layer's candidate attention on the cache: [layers, B, C, H, Dh]."""

  def serve(q, k, v, history_keys, history_values, prefix, table):
    return jnp.stack(
      [
        impl.candidate_attention(
          q[i],
          k[i],
          v[i],
          history_keys[i],
          history_values[i],
          prefix,
          **_bias(table, i, max_distance),
        )
        for i in range(q.shape[0])
      ]
    )

  return serve


def training_fn(impl, max_distance: int) -> Callable:
  """Loss and gradients of every layer's causal history attention plus slate attention."""

  def loss(history_q, history_keys, history_values, q, k, v, lengths, prefix, table):
    total = 0.0
    for i in range(q.shape[0]):
      bias = _bias(table, i, max_distance)
      states = impl.causal_attention(
        history_q[i], history_keys[i], history_values[i], lengths, **bias
      )
      valid = jnp.arange(states.shape[1])[None, :, None, None] < lengths[:, None, None, None]
      slates = impl.candidate_attention(
        q[i], k[i], v[i], history_keys[i], history_values[i], prefix, **bias
      )
      # Fixed cotangents: the sums weigh rows differently, so every gradient is exercised.
      total += jnp.sum(jnp.where(valid, jnp.sin(states), 0.0)) + jnp.sum(jnp.cos(slates))
    return total

  return jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4, 5))


def softmax_inputs(sizes: Sizes, seed: int = 0) -> tuple:
  """Unit queries [A, Q, D], unit negatives [M, D], log-Q, ids and each anchor's positives."""
  rng = np.random.default_rng(seed)
  catalogue = 50 * sizes.negatives

  def unit(shape):
    x = rng.normal(size=shape)
    return jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), jnp.float32)

  items = rng.integers(1, catalogue + 1, sizes.negatives)
  # Positives drawn from the sampled ids too, so that the exclusion really masks entries.
  excluded = np.where(
    rng.random((sizes.anchors, sizes.excluded)) < 0.5,
    rng.choice(items, (sizes.anchors, sizes.excluded)),
    -1,
  )
  return (
    unit((sizes.anchors, sizes.conditions, sizes.embed_dim)),
    unit((sizes.negatives, sizes.embed_dim)),
    _normal(rng, (sizes.negatives,)),
    jnp.asarray(items, jnp.int32),
    jnp.asarray(excluded, jnp.int32),
  )


def implementations(interpret: bool, chunk_anchors: int) -> dict[str, types.SimpleNamespace]:
  """The kernels, the references and the chunked softmax under the same names (None: not one)."""
  return {
    "pallas": types.SimpleNamespace(
      candidate_attention=functools.partial(
        pallas_attention.candidate_attention, interpret=interpret
      ),
      causal_attention=functools.partial(pallas_attention.causal_attention, interpret=interpret),
      negative_logsumexp=functools.partial(sampled_softmax.negative_logsumexp, interpret=interpret),
    ),
    "xla": types.SimpleNamespace(
      candidate_attention=attention.candidate_attention,
      causal_attention=attention.causal_attention,
      negative_logsumexp=sampled_softmax.reference_negative_logsumexp,
    ),
    "chunked": types.SimpleNamespace(
      candidate_attention=None,
      causal_attention=None,
      negative_logsumexp=functools.partial(
        chunked_softmax.chunked_negative_logsumexp, chunk_anchors=chunk_anchors
      ),
    ),
  }


def softmax_fn(impl) -> Callable:
  """The negatives' log-sum-exp [A, Q] at temperature 0.05."""

  def lse(queries, vectors, log_q, items, excluded):
    return impl.negative_logsumexp(queries, vectors, log_q, items, excluded, 0.05)

  return lse


def softmax_grad_fn(impl) -> Callable:
  """A loss on the log-sum-exp and its gradients for queries, negatives and log-Q."""

  def loss(queries, vectors, log_q, items, excluded):
    return jnp.sum(jax.nn.softplus(softmax_fn(impl)(queries, vectors, log_q, items, excluded)))

  return jax.value_and_grad(loss, argnums=(0, 1, 2))


def _visible_pairs(prefix: np.ndarray) -> float:
  """(query, key) pairs attention must compute: each query's prefix and its own key."""
  return float(np.sum(prefix + 1))


def operations(sizes: Sizes) -> list[tuple[str, str, Callable, tuple, float, float]]:
  """(name, the implementations' function it calls, implementation -> function, arguments,
  useful FLOPs, least bytes) of each operation."""
  row_bytes = sizes.heads * sizes.head_dim * _F32  # one token's q, k, v or output, all heads
  per_pair = 4.0 * sizes.head_dim * sizes.heads

  serving = attention_inputs(sizes, sizes.users)
  lengths = np.asarray(serving["lengths"])
  serving_flops = per_pair * _visible_pairs(np.asarray(serving["serving_prefix"]))
  # Candidates' q, k, v read and output written; the cache read up to each length.
  serving_bytes = (4 * sizes.users * sizes.candidates + 2 * lengths.sum()) * row_bytes

  training = attention_inputs(sizes, sizes.training_users, seed=1)
  lengths = np.asarray(training["lengths"])
  positions = np.arange(sizes.history)[None, :]
  causal_prefix = np.minimum(positions, lengths[:, None])[positions < lengths[:, None]]
  training_flops = per_pair * (
    _visible_pairs(causal_prefix) + _visible_pairs(np.asarray(training["slate_prefix"]))
  )
  training_bytes = (4 * lengths.sum() + 4 * sizes.training_users * sizes.candidates) * row_bytes

  rows = sizes.anchors * sizes.conditions
  softmax_flops = 2.0 * rows * sizes.negatives * sizes.embed_dim
  # Queries and negatives (vectors, log-Q, ids) and positives read, the log-sum-exp written.
  softmax_bytes = _F32 * (
    rows * (sizes.embed_dim + 1)
    + sizes.negatives * (sizes.embed_dim + 2)
    + sizes.anchors * sizes.excluded
  )
  softmax_args = softmax_inputs(sizes)
  names = ("q", "k", "v", "history_keys", "history_values", "serving_prefix", "relative_bias")
  training_names = ("history_q", "history_keys", "history_values", "q", "k", "v", "lengths")
  training_names += ("slate_prefix", "relative_bias")
  # A backward pass does twice its forward's matmuls and moves about as many bytes again.
  return [
    (
      "serving",
      "candidate_attention",
      functools.partial(serving_fn, max_distance=sizes.history),
      tuple(serving[n] for n in names),
      sizes.layers * serving_flops,
      sizes.layers * serving_bytes,
    ),
    (
      "training",
      "causal_attention",
      functools.partial(training_fn, max_distance=sizes.history),
      tuple(training[n] for n in training_names),
      3 * sizes.layers * training_flops,
      2 * sizes.layers * training_bytes,
    ),
    ("softmax", "negative_logsumexp", softmax_fn, softmax_args, softmax_flops, softmax_bytes),
    (
      "softmax+grad",
      "negative_logsumexp",
      softmax_grad_fn,
      softmax_args,
      3 * softmax_flops,
      2 * softmax_bytes,
    ),
  ]


def measure(
  sizes: Sizes,
  repeats: int,
  interpret: bool,
  check: bool,
  report: Callable[[Timing], None],
  chunk_anchors: int,
) -> list[Timing]:
  """Compiles and times each operation with every implementation it has, kernel first.

  Each timing goes to `report` as soon as it is measured; an implementation
  that fails to compile or run is printed as such and skipped. With `check`,
  each implementation's outputs are compared with the reference's ("xla").
  """
  results = []
  for name, function, make, args, flops, num_bytes in operations(sizes):
    outputs = {}
    for implementation, impl in implementations(interpret, chunk_anchors).items():
      if getattr(impl, function) is None:
        continue
      try:
        compiled = jax.jit(make(impl)).lower(*args).compile()
        seconds = statistics.median(timing.call_seconds(compiled, args, 1, repeats))
      except Exception as error:  # noqa: BLE001 - report it and go on to the next operation
        print(f"{name} {implementation}: FAILED {type(error).__name__}: {str(error)[:2000]}")
        continue
      results.append(Timing(name, implementation, seconds, flops, num_bytes))
      report(results[-1])
      if check:
        outputs[implementation] = compiled(*args)
    reference = outputs.pop("xla", None)
    for implementation, output in sorted(outputs.items()) if reference is not None else ():
      errors = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30)),
        output,
        reference,
      )
      print(f"check {name}: max |{implementation} - xla| / max |xla| = {jax.tree.leaves(errors)}")
  return results


def main(argv: list[str] | None = None) -> list[Timing]:
  """Measures the peaks, times every operation, prints the table; returns the timings."""
  parser = argparse.ArgumentParser(prog="python -m experiments.bench_kernels", description=__doc__)
  parser.add_argument("--small", action="store_true", help="tiny sizes: seconds on a CPU")
  parser.add_argument("--check", action="store_true", help="compare outputs and gradients")
  parser.add_argument("--repeats", type=int, default=10, help="timed calls; the median counts")
  parser.add_argument(
    "--relative_buckets",
    type=int,
    default=0,
    help="attention with a learned recency bias of this many buckets (the synthetic default: 32)",
  )
  parser.add_argument(
    "--chunk_anchors",
    type=int,
    default=256,
    help="anchors per chunk of the chunked softmax (kernels/chunked_softmax.py)",
  )
  args = parser.parse_args(argv)
  sizes = dataclasses.replace(
    SMALL if args.small else Sizes(), relative_buckets=args.relative_buckets
  )
  interpret = default_interpret()
  peak_flops = max(timing.matmul_peak_flops(sizes.matmul_sizes).values())
  peak_bytes = timing.copy_bandwidth(sizes.copy_bytes)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  print(f"pallas: {'interpret mode' if interpret else 'compiled (Triton)'}; sizes: {sizes}")
  print(f"peaks: float32 matmul {peak_flops / 1e12:.2f} TFLOP/s, copy {peak_bytes / 1e9:.1f} GB/s")
  print(HEADER)
  print("-" * len(HEADER))
  return measure(
    sizes,
    args.repeats,
    interpret,
    args.check,
    lambda t: print(t.row(peak_flops, peak_bytes)),
    args.chunk_anchors,
  )


if __name__ == "__main__":
  main()
