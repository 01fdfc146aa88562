"""The hot path: a chain of steps with one contract (``workers.stream.step``)."""
