"""evaluation stage of UniPinRec."""
