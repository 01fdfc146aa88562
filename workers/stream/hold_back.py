"""FeedbackHoldBack: while a backlog drains, feedback waits for the predictions sent before it.

The consumer fetches every assigned partition at once, in chunks of bytes, not of time.  When
the worker starts behind (a restart, a deploy, a rebalance, a backfill), the feedback topic
drains faster than the predictions topic: its messages are fewer and smaller, so each fetch
reaches further into its history.  Feedback then overtakes the predictions it names and waits
for them in the pending queue, which costs Postgres an insert, an update and a delete per
feedback instead of one insert: in the bench, most feedback took that path although far less
was sent before its prediction (docs/performance.md).

So a feedback record is handed to the window only once the predictions partition of the same
number (the topics are co-partitioned) has been read up to the feedback's Kafka timestamp, or
has been read to its end.  Kafka Streams merges a task's partitions by timestamp for the same
reason.  Prediction records are never held.  Held records are raw and undecoded; they count
against ``max_held``, beyond which the oldest are released anyway, so memory stays bounded, and
none waits longer than ``max_wait_seconds`` (a window's length, or 30 s): a long backlog of
predictions delays its partition's feedback by that at most, not by the time the backlog takes.
Offsets are committed only for records handed on, and each partition's records are handed on in
order, so a crash or a rebalance re-reads the held ones: nothing is lost.  When both topics are
read at their ends (live traffic) nothing waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar

from workers.stream.decode import KafkaRecord
from workers.stream.messages import Fetched, Released
from workers.stream.step import Step


class TimedRecord(Protocol):
    """What the hold-back reads of a Kafka record (aiokafka's ``ConsumerRecord``)."""

    @property
    def timestamp(self) -> int: ...


R = TypeVar("R", bound=TimedRecord)
_TIMESTAMP = attrgetter("timestamp")
# aiokafka's TopicPartition, kept abstract so the logic is testable without Kafka.
Partition = Any
# Asked of a predictions partition: has the consumer read it to its end?
CaughtUp = Callable[[Partition], bool]


class FeedbackHoldBack(Generic[R]):
    def __init__(
        self,
        predictions_topic: str,
        feedback_topic: str,
        partition_of: Callable[[str, int], Partition],
        max_held: int,
        max_wait_seconds: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        self.partition_of = partition_of
        self.max_held = max_held
        self.max_wait_seconds = max_wait_seconds
        self.monotonic = monotonic
        # Latest Kafka timestamp read from each predictions partition number.
        self._read_up_to: dict[int, int] = {}
        self._held: dict[Partition, deque[R]] = {}
        # When each partition's queue last went from empty to holding: its oldest record's wait.
        self._holding_since: dict[Partition, float] = {}
        self.held = 0

    def holding(self) -> set[Partition]:
        """The feedback partitions with records held: reading more of them adds nothing now."""
        return {tp for tp, records in self._held.items() if records}

    def what_to_read(self, assigned: Iterable[Partition], most: int) -> tuple[list[Partition], int]:
        """The partitions to fetch from (an empty list: all assigned) and how many records.

        While feedback is held, not the feedback partitions holding it: aiokafka drains one
        partition's fetched records before the next, and would keep handing over feedback while
        the predictions it waits for sit in the fetcher.  Never more feedback than there is room
        for, and only predictions once it is half full: past its bound it would have to let
        feedback go ahead of its prediction (with a small window cap, much of the bench's
        feedback did; docs/performance.md)."""
        holding = self.holding()
        if not holding:
            return [], most
        room = self.max_held - self.held
        if room <= self.max_held // 2:
            return [tp for tp in assigned if tp.topic == self.predictions_topic], most
        return [tp for tp in assigned if tp not in holding], min(most, room)

    def predictions_partitions_waited_on(self) -> list[Partition]:
        """The predictions partitions whose progress decides what is released next."""
        return [
            self.partition_of(self.predictions_topic, tp.partition)
            for tp, records in self._held.items()
            if records
        ]

    def release(
        self, batches: Mapping[Partition, list[R]], caught_up: CaughtUp
    ) -> dict[Partition, list[R]]:
        """What of ``batches`` and of the held records goes to the window now, per partition."""
        released = self._hold_feedback(batches)
        self._release_held(released, caught_up)
        self._release_oldest_beyond_bound(released)
        return {tp: records for tp, records in released.items() if records}

    def _hold_feedback(self, batches: Mapping[Partition, list[R]]) -> dict[Partition, list[R]]:
        """Feedback records join their partition's queue; the rest is released, and each
        predictions partition's latest timestamp noted."""
        released: dict[Partition, list[R]] = {}
        for tp, records in batches.items():
            if not records:
                continue
            if tp.topic == self.feedback_topic:
                queue = self._held.setdefault(tp, deque())
                if not queue:
                    self._holding_since[tp] = self.monotonic()
                queue.extend(records)
                self.held += len(records)
                continue
            released[tp] = records
            if tp.topic == self.predictions_topic:
                latest = max(map(_TIMESTAMP, records))
                if latest > self._read_up_to.get(tp.partition, -1):
                    self._read_up_to[tp.partition] = latest
        return released

    def _release_held(self, released: dict[Partition, list[R]], caught_up: CaughtUp) -> None:
        """Held feedback whose predictions partition is read far enough, or that waited long
        enough, in each partition's order."""
        waited_too_long = self.monotonic() - self.max_wait_seconds
        for tp, queue in self._held.items():
            if not queue:
                continue
            predictions_tp = self.partition_of(self.predictions_topic, tp.partition)
            out = released.setdefault(tp, [])
            if caught_up(predictions_tp) or self._holding_since[tp] <= waited_too_long:
                out.extend(queue)
                self.held -= len(queue)
                queue.clear()
                continue
            limit = self._read_up_to.get(tp.partition, -1)
            while queue and queue[0].timestamp <= limit:
                out.append(queue.popleft())
                self.held -= 1

    def _release_oldest_beyond_bound(self, released: dict[Partition, list[R]]) -> None:
        while self.held > self.max_held:
            waiting = ((tp, queue) for tp, queue in self._held.items() if queue)
            tp, queue = min(waiting, key=lambda item: item[1][0].timestamp)
            released.setdefault(tp, []).append(queue.popleft())
            self.held -= 1

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop held records of partitions this worker no longer owns: their offsets were never
        committed, so the new owner reads them again."""
        for tp in partitions:
            queue = self._held.pop(tp, None)
            if queue:
                self.held -= len(queue)

    def forget_all(self) -> None:
        self._held.clear()
        self.held = 0


class HoldBackStep:
    """The hold-back as the chain's first step: fetched records in, records released in each
    partition's order out, with the offset after the last released of each partition."""

    def __init__(self, policy: FeedbackHoldBack[KafkaRecord], next_step: Step[Released]) -> None:
        self.policy = policy
        self.next_step = next_step

    def what_to_read(self, assigned: Iterable[Partition], most: int) -> tuple[list[Partition], int]:
        return self.policy.what_to_read(assigned, most)

    def submit(self, message: Fetched) -> None:
        released: Mapping[Partition, list[KafkaRecord]] = {}
        if message.records or self.policy.held:
            released = self.policy.release(message.records, message.progress.read_to_the_end)
        self.next_step.submit(
            Released(
                [record for part in released.values() for record in part],
                {tp: part[-1].offset + 1 for tp, part in released.items()},
                message.progress,
            )
        )

    def demand(self) -> int:
        return self.next_step.demand()

    async def poll(self, wait: float = 0.0) -> None:
        await self.next_step.poll(wait)

    async def join(self, deadline: float | None) -> None:
        # Held records are left held: their offsets are not committed, so they are read again.
        await self.next_step.join(deadline)

    def terminate(self) -> None:
        self.policy.forget_all()
        self.next_step.terminate()
