"""CommitOffsets, the last step: Kafka offsets of written windows, and what they changed.

Offsets are committed here, explicitly, and only for windows whose transaction has committed
(arroyo's ``CommitOffsets`` last; quixstreams' "sinks flush, then offsets").  Nothing is
acknowledged implicitly: a crash at any point replays from the last committed offsets, and the
idempotent sink turns the replay into a no-op.  Windows arrive in order, so the offsets of all
that arrived since the last commit go in one request.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Protocol

from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from workers.stream.messages import Partition, WrittenWindow
from workers.stream.step import by_deadline
from workers.telemetry import WorkerTelemetry

log = logging.getLogger("feedbackflow.worker")


class OffsetCommitter(Protocol):
    """The part of aiokafka's consumer this step uses."""

    async def commit(self, offsets: Mapping[Partition, int]) -> None: ...

    def highwater(self, tp: Partition) -> int | None: ...


class CommitOffsets:
    def __init__(self, consumer: OffsetCommitter, telemetry: WorkerTelemetry) -> None:
        self.consumer = consumer
        self.telemetry = telemetry
        self._written: list[WrittenWindow] = []

    def submit(self, message: WrittenWindow) -> None:
        self._written.append(message)

    def demand(self) -> int:
        return sys.maxsize

    async def poll(self, wait: float = 0.0) -> None:
        if not self._written:
            return
        written, self._written = self._written, []
        offsets: dict[Partition, int] = {}
        for window in written:
            offsets.update(window.next_offsets)
        await self._commit(offsets)
        for window in written:
            self._observe(window)

    async def join(self, deadline: float | None) -> None:
        async with by_deadline(deadline):
            await self.poll()

    def terminate(self) -> None:
        self._written.clear()

    async def _commit(self, offsets: Mapping[Partition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance): the rows are in Postgres and the new owner's replay
            # of these windows inserts nothing new.  Nothing is lost and nothing duplicated.
            log.warning("offset commit refused after a rebalance: %r", exc)
            self.telemetry.windows.labels("commit_refused").inc()
            return
        except KafkaError:
            self.telemetry.windows.labels("commit_failed").inc()
            raise
        self.telemetry.last_commit.set(time.time())

    def _observe(self, window: WrittenWindow) -> None:
        t, outcome = self.telemetry, window.outcome
        t.windows.labels("written").inc()
        t.window_events.observe(window.events)
        t.predictions_written.inc(outcome.predictions_inserted)
        t.feedback_written.inc(outcome.feedback_inserted)
        t.feedback_queued.inc(outcome.feedback_queued)
        for status, count in outcome.resolved.items():
            reason = "prediction_past_retention" if status == "expired" else ""
            t.feedback_resolved.labels(status, reason).inc(count)
        t.feedback_resolved.labels("expired", "no_prediction_within_retention").inc(
            outcome.expired_unmatched
        )
        for dead in window.dead_letters:
            t.dead_letters.labels(dead.topic, dead.error_field).inc()
        for tp, next_offset in window.next_offsets.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                t.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - next_offset, 0)
                )
