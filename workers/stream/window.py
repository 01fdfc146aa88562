"""WindowBuffer: what has been read from Kafka but is not yet durable in Postgres.

A window is tumbling in processing time and closes early at a size cap, so memory is bounded by
the cap whatever the traffic (three windows: one filling while up to two are written).

It deduplicates by event id (first wins): the same feedback sent three times within one window
is one row before Postgres sees it.  It also drops ids of the window drained just before, which
may still be in flight: Postgres's own check cannot see that window's rows until it commits, and
every window before it has committed by the time this one is written (two in flight at most).

It also carries, per partition, the next offset to commit: offsets of every record read,
including duplicates and dead letters, since they too are done once the window is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.stream.decode import (
    DeadLetter,
    DecodedBatch,
    FeedbackRow,
    PredictionRow,
    SelectorRow,
)

# aiokafka's TopicPartition; kept abstract so the buffer is testable without Kafka.
Partition = Any


@dataclass
class WindowContents:
    predictions: list[PredictionRow]
    feedback: list[FeedbackRow]
    dead_letters: list[DeadLetter]
    next_offsets: dict[Partition, int]
    events: int
    # Feedback aimed at predictions by their tags (rare; most windows have none).
    selectors: list[SelectorRow] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.events == 0


@dataclass
class WindowBuffer:
    length_seconds: float
    max_events: int
    monotonic: Callable[[], float]
    _predictions: dict[int, PredictionRow] = field(default_factory=dict)
    _feedback: dict[int, FeedbackRow] = field(default_factory=dict)
    _dead_letters: list[DeadLetter] = field(default_factory=list)
    _next_offsets: dict[Partition, int] = field(default_factory=dict)
    _events: int = 0
    _opened_at: float | None = None
    _previous_predictions: dict[int, PredictionRow] = field(default_factory=dict)
    _previous_feedback: dict[int, FeedbackRow] = field(default_factory=dict)
    _selectors: dict[int, SelectorRow] = field(default_factory=dict)

    def add(self, batch: DecodedBatch, next_offsets: Mapping[Partition, int]) -> None:
        if self._opened_at is None and next_offsets:
            self._opened_at = self.monotonic()
        # Keyed by the id's integer: a UUID's __hash__ is a Python method, an int's is not.
        predictions, previous_predictions = self._predictions, self._previous_predictions
        for prediction in batch.predictions:
            key = prediction.prediction_id.int
            if key not in previous_predictions:
                predictions.setdefault(key, prediction)
        feedback_rows, previous_feedback = self._feedback, self._previous_feedback
        for feedback in batch.feedback:
            key = feedback.feedback_id.int
            if key not in previous_feedback:
                feedback_rows.setdefault(key, feedback)
        self._dead_letters.extend(batch.dead_letters)
        for selector in batch.selectors:  # a replay of one is a no-op in the sink
            self._selectors.setdefault(selector.feedback_id.int, selector)
        self._next_offsets.update(next_offsets)
        self._events += (
            len(batch.predictions)
            + len(batch.feedback)
            + len(batch.dead_letters)
            + len(batch.selectors)
        )

    @property
    def events(self) -> int:
        return self._events

    def room(self) -> int:
        """How many more events fit before the size cap closes the window."""
        return max(self.max_events - self._events, 0)

    def seconds_left(self) -> float:
        if self._opened_at is None:
            return self.length_seconds
        return max(self._opened_at + self.length_seconds - self.monotonic(), 0.0)

    def due(self) -> bool:
        if not self._next_offsets:
            return False
        return self._events >= self.max_events or self.seconds_left() <= 0

    def drain(self) -> WindowContents:
        contents = WindowContents(
            predictions=list(self._predictions.values()),
            feedback=list(self._feedback.values()),
            dead_letters=self._dead_letters,
            next_offsets=self._next_offsets,
            events=self._events,
            selectors=list(self._selectors.values()),
        )
        self._previous_predictions, self._previous_feedback = self._predictions, self._feedback
        self._predictions, self._feedback, self._dead_letters = {}, {}, []
        self._selectors = {}
        self._next_offsets, self._events, self._opened_at = {}, 0, None
        return contents
