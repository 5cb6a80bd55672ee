"""index stage of UniPinRec: item vectors -> a usearch index on disk, with its manifest."""
