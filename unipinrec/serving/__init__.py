"""serving stage of UniPinRec: retrieve, rank on the cache, budgets."""
