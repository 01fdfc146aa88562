"""CommitOffsets, the last step: Kafka offsets of written windows, and what they changed.

Offsets are committed here, explicitly, and only for windows whose transaction has committed
(arroyo's ``CommitOffsets`` last; quixstreams' "sinks flush, then offsets").  Nothing is
acknowledged implicitly: a crash at any point replays from the last committed offsets, and the
idempotent sink turns the replay into a no-op.  Windows arrive in order, so the offsets of all
that arrived since the last commit go in one request.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from workers.health import PipelineHealth
from workers.stream.messages import Partition, WrittenWindow
from workers.stream.step import by_deadline
from workers.telemetry import WorkerTelemetry

log = logging.getLogger("feedbackflow.worker")

# The longest one commit may take before the next poll tries again (the broker is away).
COMMIT_TIMEOUT_SECONDS = 10.0


class OffsetCommitter(Protocol):
    """The part of aiokafka's consumer this step uses."""

    async def commit(self, offsets: Mapping[Partition, int]) -> None: ...

    def highwater(self, tp: Partition) -> int | None: ...


class CommitOffsets:
    def __init__(
        self,
        consumer: OffsetCommitter,
        telemetry: WorkerTelemetry,
        health: PipelineHealth | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.telemetry = telemetry
        self.health = health or PipelineHealth()
        self.monotonic = monotonic
        self._written: list[WrittenWindow] = []
        self._retry_at, self._delay = 0.0, 0.5

    def submit(self, message: WrittenWindow) -> None:
        self._written.append(message)

    def demand(self) -> int:
        return sys.maxsize

    async def poll(self, wait: float = 0.0) -> None:
        if not self._written or self.monotonic() < self._retry_at:
            return
        offsets: dict[Partition, int] = {}
        for window in self._written:
            offsets.update(window.next_offsets)
        if not await self._commit(offsets):
            return  # kept: the next poll commits them, with whatever came since
        written, self._written = self._written, []
        for window in written:
            self._observe(window)

    async def join(self, deadline: float | None) -> None:
        async with by_deadline(deadline):
            await self.poll()

    def terminate(self) -> None:
        self._written.clear()

    async def _commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Whether the windows are done with: committed, or refused for good."""
        try:
            # aiokafka's commit waits for the group's coordinator without a limit: a broker cut
            # off would hold the loop (and every step behind it) for as long as it is away.
            async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
                await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance): the rows are in Postgres and the new owner's replay
            # of these windows inserts nothing new.  Nothing is lost and nothing duplicated.
            log.warning("offset commit refused after a rebalance: %r", exc)
            self.telemetry.windows.labels("commit_refused").inc()
            return True
        except (KafkaError, TimeoutError) as exc:
            # The broker is away: the rows are in Postgres, the offsets wait for it to return
            # (a crash meanwhile replays the windows, which changes nothing).
            self.telemetry.windows.labels("commit_failed").inc()
            self.health.failing("commit", repr(exc))
            log.warning("offset commit failed, retrying in %.1fs: %r", self._delay, exc)
            self._retry_at = self.monotonic() + self._delay
            self._delay = min(self._delay * 2, 10.0)
            return False
        self._delay = 0.5
        self.telemetry.last_commit.set(time.time())
        self.health.committed()
        return True

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
        t.lag.committed(
            window.next_offsets, {tp: self.consumer.highwater(tp) for tp in window.next_offsets}
        )
