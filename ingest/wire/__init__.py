"""The wire format v1: what a prediction and a feedback are, as JSON, for every producer."""
