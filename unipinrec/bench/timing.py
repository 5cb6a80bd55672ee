"""Wall-clock timing of jitted calls and the device's measured peaks (JAX and NumPy only).

Peaks are measured, not looked up: the best rate of a jitted float32 square
matmul (at JAX's default precision, the one the timed programs use) and of a
large elementwise copy, in the same process as the figures compared with
them, so both see the same machine and the same load.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def call_seconds(fn: Callable, args: Sequence, warmup: int, repeats: int) -> list[float]:
  """Wall times of `repeats` blocking calls of `fn(*args)`, after `warmup` untimed ones."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    seconds.append(time.perf_counter() - start)
  return seconds


def matmul_flops(
  lhs_shape: Sequence[int], rhs_shape: Sequence[int], warmup: int = 2, repeats: int = 10
) -> float:
  """Float32 FLOP/s of a jitted `jnp.matmul` of arrays of these shapes (2 B M K N FLOPs).

  Shapes are [M, K] and [K, N], or [B, M, K] and [B, K, N] for a batched product.
  """
  *batch, m, k = lhs_shape
  if tuple(rhs_shape) != (*batch, k, rhs_shape[-1]):
    raise ValueError(f"shapes {tuple(lhs_shape)} and {tuple(rhs_shape)} do not multiply")
  key_a, key_b = jax.random.split(jax.random.key(m * k))
  a = jax.random.normal(key_a, tuple(lhs_shape), jnp.float32)
  b = jax.random.normal(key_b, tuple(rhs_shape), jnp.float32)
  matmul = jax.jit(jnp.matmul).lower(a, b).compile()
  flops = 2.0 * math.prod(batch) * m * k * rhs_shape[-1]
  return flops / statistics.median(call_seconds(matmul, (a, b), warmup, repeats))


def matmul_peak_flops(
  sizes: Sequence[int] = (512, 1024, 2048), warmup: int = 2, repeats: int = 10
) -> dict[int, float]:
  """Float32 FLOP/s of a jitted n x n @ n x n matmul for each n (2 n^3 FLOPs over the median)."""
  return {n: matmul_flops((n, n), (n, n), warmup, repeats) for n in sizes}


def copy_bandwidth(num_bytes: int = 1 << 30, warmup: int = 2, repeats: int = 10) -> float:
  """Bytes/s of a jitted `x + 1` over a float32 array of `num_bytes`: it reads and writes each."""
  x = jnp.zeros((num_bytes // 4,), jnp.float32)
  add_one = jax.jit(lambda x: x + 1.0).lower(x).compile()
  return 2.0 * x.size * 4 / statistics.median(call_seconds(add_one, (x,), warmup, repeats))
