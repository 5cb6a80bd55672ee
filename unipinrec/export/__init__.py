"""export stage of UniPinRec: a checkpoint -> the serving model and its item vectors."""
