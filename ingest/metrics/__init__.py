"""The metric registry: which metrics exist, what their values may be, what they may target."""
