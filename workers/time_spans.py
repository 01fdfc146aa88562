"""Spans of time that several rules share, defined once: decoding enforces them, and the sink's
partition bounds and the window's SQL rely on them, so the three must agree."""

from __future__ import annotations

from datetime import timedelta

# A UUIDv7 prediction id carries a time; decoding holds a prediction's timestamp to within this
# of it, so feedback naming the id finds its prediction within this of the id's time (one or two
# day partitions instead of all of them).
ID_TIME_SPAN = timedelta(days=1)
# An earlier copy of an event (a replay, a producer's retry) is looked for within this of the
# event's time: a replay has the same time, a retry a close one.
DEDUPE_SPAN = timedelta(days=1)
# Event times further ahead than this are a producer's clock bug, not data to keep.
MAX_FUTURE_SKEW = timedelta(days=1)


def sql_interval(span: timedelta) -> str:
    """The span as a SQL interval literal, for statements built once at import."""
    return f"interval '{span // timedelta(microseconds=1)} microseconds'"
