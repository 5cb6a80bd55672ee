"""A 32-bit integer mixer shared by hashed item ids and items computed from their ids."""

from __future__ import annotations

GOLDEN = 0x9E3779B9  # 2^32 / golden ratio: spreads seeds and counters apart


def mix32(x, xp):
  """MurmurHash3's 32-bit finaliser on uint32 `x`, in NumPy or jax.numpy (`xp`): the same bits
  on every platform."""
  x = x ^ (x >> 16)
  x = x * xp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * xp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)
