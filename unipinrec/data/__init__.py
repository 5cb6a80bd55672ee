"""data stage of UniPinRec."""
