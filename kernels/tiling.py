"""Tile sizes and padding shared by the kernels: Triton wants power-of-2 tiles of 16 or more."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

MIN_BLOCK = 16  # the smallest tile a Triton dot accepts


def pad_to(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
  """`x` padded with `value` at the end of `axis` up to `size`."""
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def block(requested: int, extent: int) -> int:
  """A power-of-2 tile of at least 16, no larger than the padded extent needs."""
  return max(MIN_BLOCK, min(requested, pl.next_power_of_2(extent)))
