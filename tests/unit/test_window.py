"""WindowBuffer: tumbling processing-time window with a size cap, dedupe and offsets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ingest.sdk.producer import uuid7
from workers.stream.decode import (
    DeadLetter,
    DecodedBatch,
    FeedbackRow,
    PredictionRow,
    micros,
)
from workers.stream.window import WindowBuffer

NOW = datetime(2025, 11, 24, 16, tzinfo=UTC)
READ_AT = micros(NOW)


@dataclass
class FakeClock:
    """A monotonic clock the test advances by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class TP:
    """Stands in for aiokafka's TopicPartition."""

    topic: str
    partition: int


P0 = TP("test.predictions", 0)
P1 = TP("test.predictions", 1)
F0 = TP("test.feedback", 0)


def prediction_row(application: str = "app", ms: int = 1) -> PredictionRow:
    prediction_id = uuid7(ms)
    return PredictionRow(
        prediction_id, None, micros(NOW), None, application, None, "{}", "{}", "{}", READ_AT
    )


def feedback_row(rationale: str | None = None, ms: int = 1) -> FeedbackRow:
    feedback_id = uuid7(ms)
    return FeedbackRow(
        feedback_id,
        micros(NOW),
        "thumbs_up",
        "boolean",
        None,
        "key",
        None,
        None,
        True,
        None,
        None,
        None,
        None,
        None,
        rationale,
        None,
        None,
        "{}",
        "{}",
        READ_AT,
    )


def dead_letter(offset: int = 0) -> DeadLetter:
    return DeadLetter("test.feedback", 0, offset, NOW, None, b"x", "(payload)", "invalid JSON", NOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def window(clock: FakeClock) -> WindowBuffer:
    return WindowBuffer(length_seconds=10.0, max_events=5, monotonic=clock)


def test_empty_window_is_not_due(window: WindowBuffer, clock: FakeClock) -> None:
    assert not window.due()
    clock.advance(3600)
    assert not window.due()
    assert window.events == 0
    assert window.seconds_left() == 10.0


def test_duplicate_predictions_are_kept_once_first_wins(window: WindowBuffer) -> None:
    first = prediction_row("first")
    again = first._replace(application="second")
    window.add(DecodedBatch(predictions=[first]), {P0: 1})
    window.add(DecodedBatch(predictions=[again, first]), {P0: 3})
    contents = window.drain()
    assert contents.predictions == [first]
    assert contents.events == 3


def test_duplicate_feedback_are_kept_once_first_wins(window: WindowBuffer) -> None:
    first = feedback_row("first")
    again = first._replace(rationale="second")
    other = feedback_row("other", ms=2)
    window.add(DecodedBatch(feedback=[first, again, other]), {F0: 3})
    contents = window.drain()
    assert contents.feedback == [first, other]
    assert contents.events == 3


def test_dead_letters_are_all_kept_and_counted(window: WindowBuffer) -> None:
    window.add(DecodedBatch(dead_letters=[dead_letter(0), dead_letter(0)]), {F0: 1})
    contents = window.drain()
    assert contents.dead_letters == [dead_letter(0), dead_letter(0)]
    assert contents.events == 2


def test_due_at_size_cap(window: WindowBuffer) -> None:
    window.add(DecodedBatch(predictions=[prediction_row(ms=n) for n in range(4)]), {P0: 4})
    assert not window.due()
    window.add(DecodedBatch(feedback=[feedback_row()]), {F0: 1})
    assert window.events == 5
    assert window.due()


def test_duplicates_count_towards_the_size_cap(window: WindowBuffer) -> None:
    row = prediction_row()
    window.add(DecodedBatch(predictions=[row] * 5), {P0: 5})
    assert window.due()
    assert len(window.drain().predictions) == 1


def test_due_after_window_length_since_first_add(window: WindowBuffer, clock: FakeClock) -> None:
    clock.advance(100)  # time before the first add does not count
    window.add(DecodedBatch(predictions=[prediction_row()]), {P0: 1})
    clock.advance(9.9)
    assert not window.due()
    assert window.seconds_left() == pytest.approx(0.1)
    window.add(DecodedBatch(predictions=[prediction_row(ms=2)]), {P0: 2})  # does not reopen
    clock.advance(0.1)
    assert window.due()
    assert window.seconds_left() == 0.0


def test_seconds_left_never_negative(window: WindowBuffer, clock: FakeClock) -> None:
    window.add(DecodedBatch(predictions=[prediction_row()]), {P0: 1})
    clock.advance(60)
    assert window.seconds_left() == 0.0


def test_records_that_were_all_dead_letters_still_open_the_window(
    window: WindowBuffer, clock: FakeClock
) -> None:
    window.add(DecodedBatch(dead_letters=[dead_letter()]), {F0: 1})
    clock.advance(10)
    assert window.due()


def test_room_counts_down_to_zero(window: WindowBuffer) -> None:
    assert window.room() == 5
    window.add(DecodedBatch(predictions=[prediction_row(ms=n) for n in range(3)]), {P0: 3})
    assert window.room() == 2
    window.add(DecodedBatch(predictions=[prediction_row(ms=n) for n in range(10, 14)]), {P0: 7})
    assert window.events == 7
    assert window.room() == 0


def test_drain_returns_contents_and_resets(window: WindowBuffer, clock: FakeClock) -> None:
    prediction, fb, dead = prediction_row(), feedback_row(), dead_letter(4)
    window.add(DecodedBatch([prediction], [fb], [dead]), {P0: 1, F0: 5})
    clock.advance(20)
    contents = window.drain()
    assert contents.predictions == [prediction]
    assert contents.feedback == [fb]
    assert contents.dead_letters == [dead]
    assert contents.next_offsets == {P0: 1, F0: 5}
    assert contents.events == 3
    assert not contents.empty

    assert window.events == 0
    assert window.room() == 5
    assert not window.due()
    assert window.seconds_left() == 10.0
    again = window.drain()
    assert again.empty
    assert again.predictions == []
    assert again.feedback == []
    assert again.dead_letters == []
    assert again.next_offsets == {}
    assert contents.dead_letters == [dead]  # the drained list is not cleared by the reset


def test_window_reopens_at_next_add_after_drain(window: WindowBuffer, clock: FakeClock) -> None:
    window.add(DecodedBatch(predictions=[prediction_row()]), {P0: 1})
    clock.advance(20)
    window.drain()
    clock.advance(100)
    window.add(DecodedBatch(predictions=[prediction_row(ms=2)]), {P0: 2})
    assert not window.due()
    clock.advance(10)
    assert window.due()


def test_ids_of_the_window_before_are_dropped(window: WindowBuffer) -> None:
    """That window may still be in flight, where Postgres's id check cannot see it."""
    prediction, feedback = prediction_row(), feedback_row()
    window.add(DecodedBatch(predictions=[prediction], feedback=[feedback]), {P0: 1})
    window.drain()
    fresh = prediction_row(ms=2)
    window.add(DecodedBatch(predictions=[prediction, fresh], feedback=[feedback]), {P0: 4})
    contents = window.drain()
    assert contents.predictions == [fresh]
    assert contents.feedback == []
    assert contents.events == 3  # still read, counted and committed
    assert contents.next_offsets == {P0: 4}


def test_dedupe_reaches_back_one_window_only(window: WindowBuffer) -> None:
    """Windows before the last have committed: Postgres's own id check sees their rows."""
    row = prediction_row()
    window.add(DecodedBatch(predictions=[row]), {P0: 1})
    window.drain()
    window.add(DecodedBatch(predictions=[prediction_row(ms=2)]), {P0: 2})
    window.drain()
    window.add(DecodedBatch(predictions=[row]), {P0: 3})
    assert window.drain().predictions == [row]


def test_next_offsets_keep_latest_per_partition(window: WindowBuffer) -> None:
    window.add(DecodedBatch(predictions=[prediction_row()]), {P0: 5, P1: 2})
    window.add(DecodedBatch(feedback=[feedback_row()]), {P0: 9, F0: 4})
    assert window.drain().next_offsets == {P0: 9, P1: 2, F0: 4}
