"""Pallas kernels beside their pure-JAX references, selected by a config's `kernel` field.

"xla" (the default) runs the references; "pallas" runs the kernels, compiled
with Triton on GPU and in Pallas interpret mode on CPU (exact, but slow: for
tests). Modules here import only JAX and NumPy.
"""

import jax

KERNELS = ("xla", "pallas")


def check_kernel(kernel: str) -> None:
  """Raises a ValueError naming the choices when `kernel` is not one of them."""
  if kernel not in KERNELS:
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def default_interpret() -> bool:
  """Interpret mode wherever Triton is not the backend (CPU: tests and CI)."""
  return jax.default_backend() != "gpu"
