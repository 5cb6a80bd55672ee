"""UniPinRec in JAX: one transformer for retrieval and ranking."""

# jaxlib's native libraries must load before usearch's: loaded after it, jaxlib's StableHLO
# version strings come back empty and jax.export cannot serialize a bundle's computations.
import jax  # noqa: F401
