"""Synthetic traffic shared by the tests and the bench (neither imports the other)."""
