"""train stage of UniPinRec."""
