"""FeedbackHoldBack: feedback reaches the window only after the predictions sent before it."""

from __future__ import annotations

from dataclasses import dataclass

from workers.stream.hold_back import FeedbackHoldBack

PREDICTIONS, FEEDBACK = "t.predictions", "t.feedback"


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(frozen=True)
class Rec:
    offset: int
    timestamp: int


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def _hold_back(max_held: int = 100, clock: FakeClock | None = None) -> FeedbackHoldBack[Rec]:
    return FeedbackHoldBack(
        PREDICTIONS,
        FEEDBACK,
        partition_of=TP,
        max_held=max_held,
        max_wait_seconds=60.0,
        monotonic=clock or FakeClock(),
    )


def _records(*timestamps: int, first_offset: int = 0) -> list[Rec]:
    return [Rec(first_offset + i, ts) for i, ts in enumerate(timestamps)]


def never(tp: TP) -> bool:
    return False


def test_predictions_pass_and_feedback_waits_for_predictions_sent_before_it() -> None:
    hold = _hold_back()
    out = hold.release(
        {TP(PREDICTIONS, 0): _records(100, 110), TP(FEEDBACK, 0): _records(105, 120, 130)}, never
    )
    assert out == {TP(PREDICTIONS, 0): _records(100, 110), TP(FEEDBACK, 0): _records(105)}
    assert hold.held == 2
    assert hold.predictions_partitions_waited_on() == [TP(PREDICTIONS, 0)]

    out = hold.release({TP(PREDICTIONS, 0): _records(125, 126, first_offset=2)}, never)
    assert out[TP(FEEDBACK, 0)] == [Rec(1, 120)]
    assert hold.held == 1


def test_partitions_are_matched_by_number_only() -> None:
    hold = _hold_back()
    out = hold.release(
        {TP(PREDICTIONS, 1): _records(500), TP(FEEDBACK, 0): _records(200, 300)}, never
    )
    assert TP(FEEDBACK, 0) not in out  # partition 0's predictions have not been read yet
    out = hold.release({TP(PREDICTIONS, 0): _records(250)}, never)
    assert out[TP(FEEDBACK, 0)] == [Rec(0, 200)]


def test_everything_is_released_once_the_predictions_partition_is_read_to_its_end() -> None:
    hold = _hold_back()
    assert hold.release({TP(FEEDBACK, 0): _records(10, 20, 30)}, never) == {}
    out = hold.release({}, lambda tp: tp == TP(PREDICTIONS, 0))
    assert out == {TP(FEEDBACK, 0): _records(10, 20, 30)}
    assert hold.held == 0
    assert hold.predictions_partitions_waited_on() == []


def test_a_feedback_record_with_an_older_timestamp_waits_behind_the_ones_before_it() -> None:
    """Offsets are committed up to what was released, so a partition is released in order."""
    hold = _hold_back()
    out = hold.release(
        {TP(PREDICTIONS, 0): _records(100), TP(FEEDBACK, 0): _records(150, 50, 60)}, never
    )
    assert TP(FEEDBACK, 0) not in out
    out = hold.release({TP(PREDICTIONS, 0): _records(155, first_offset=1)}, never)
    assert out[TP(FEEDBACK, 0)] == _records(150, 50, 60)


def test_past_the_bound_the_oldest_held_records_go_anyway() -> None:
    hold = _hold_back(max_held=3)
    out = hold.release(
        {TP(FEEDBACK, 0): _records(40, 41, 42), TP(FEEDBACK, 1): _records(10, 11)}, never
    )
    assert out == {TP(FEEDBACK, 1): _records(10, 11)}
    assert hold.held == 3
    out = hold.release({TP(FEEDBACK, 1): _records(50, first_offset=2)}, never)
    assert out == {TP(FEEDBACK, 0): [Rec(0, 40)]}
    assert hold.held == 3
    out = hold.release({TP(FEEDBACK, 0): _records(5, first_offset=3)}, never)
    assert out == {TP(FEEDBACK, 0): [Rec(1, 41)]}  # a partition's oldest goes first, in order


def test_revoked_partitions_forget_what_they_held() -> None:
    hold = _hold_back()
    hold.release({TP(FEEDBACK, 0): _records(1, 2), TP(FEEDBACK, 1): _records(3)}, never)
    hold.forget([TP(FEEDBACK, 0), TP(PREDICTIONS, 0)])
    assert hold.held == 1
    assert hold.predictions_partitions_waited_on() == [TP(PREDICTIONS, 1)]
    hold.forget_all()
    assert hold.held == 0


def test_no_feedback_waits_longer_than_a_window_for_a_slow_predictions_partition() -> None:
    clock = FakeClock()
    hold = _hold_back(clock=clock)
    assert hold.release({TP(FEEDBACK, 0): _records(500, 600)}, never) == {}
    clock.now += 30
    assert hold.release({TP(FEEDBACK, 0): _records(700, first_offset=2)}, never) == {}
    clock.now += 30
    out = hold.release({TP(PREDICTIONS, 0): _records(100)}, never)
    assert out[TP(FEEDBACK, 0)] == _records(500, 600, 700)
    assert hold.held == 0
    # The clock starts again for what is held next.
    assert hold.release({TP(FEEDBACK, 0): _records(800, first_offset=3)}, never) == {}
    clock.now += 59
    assert hold.release({}, never) == {}
    clock.now += 1
    assert hold.release({}, never) == {TP(FEEDBACK, 0): _records(800, first_offset=3)}
