"""UniPinRec in JAX: one transformer for retrieval and ranking."""
