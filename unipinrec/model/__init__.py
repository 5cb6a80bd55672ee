"""model stage of UniPinRec."""
