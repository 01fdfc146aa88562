"""Plain fakes of the consumer and the sink, for the logic of the chain without servers.

``MemorySink`` passes the same contract suite as ``PostgresSink``
(tests/integration/test_sink_contract.py), so what a test proves with it holds for the real one
as far as that suite reaches.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka.errors import CommitFailedError

from ingest.metrics.registry import registry_from_mapping
from ingest.topics import TopicNames
from workers.clock import SystemClock
from workers.health import PipelineHealth
from workers.settings import PipelineSettings
from workers.stream.chain import ChainParts
from workers.stream.consumer_loop import ConsumerLoop
from workers.stream.dead_letters import Publish
from workers.stream.decode import Decoder
from workers.stream.sink import Sink, WindowOutcome
from workers.stream.window import WindowContents
from workers.telemetry import WorkerTelemetry
from workers.testing.traffic import Record

TOPICS = TopicNames("fake")


@dataclass(frozen=True)
class TP:
    """A topic partition, as aiokafka's ``TopicPartition`` is used by the steps."""

    topic: str
    partition: int


class FakeConsumer:
    """Hands out one prepared batch per ``getmany`` and records every commit; ``refuse`` makes
    the next commits fail as after a rebalance, ``crash_on_commit`` as if the process died."""

    def __init__(
        self,
        batches: list[list[Record]],
        refuse: int = 0,
        log: list[str] | None = None,
        crash_on_commit: bool = False,
    ) -> None:
        self.batches = list(batches)
        self.log = [] if log is None else log
        self.commits: list[dict[Any, int]] = []
        self.all_committed = asyncio.Event()
        self.fetched = asyncio.Event()
        self.refuse = refuse
        self.crash_on_commit = crash_on_commit
        # The offset after the last record of each partition: committed there, all is written.
        self._ends = {TP(r.topic, r.partition): r.offset + 1 for batch in batches for r in batch}
        self._committed: dict[Any, int] = {}

    async def getmany(
        self, *partitions: Any, timeout_ms: int, max_records: int
    ) -> dict[Any, list[Record]]:
        await asyncio.sleep(0)
        self.fetched.set()
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch = self.batches.pop(0)
        return {TP(batch[0].topic, batch[0].partition): batch}

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        if self.crash_on_commit:
            raise ProcessDied("killed between the Postgres commit and the Kafka commit")
        if self.refuse:
            self.refuse -= 1
            raise CommitFailedError("the group rebalanced")
        self.commits.append(dict(offsets))
        self.log.append(f"commit {max(offsets.values())}")
        self._committed.update(offsets)
        if all(self._committed.get(tp, 0) >= end for tp, end in self._ends.items()):
            self.all_committed.set()

    def highwater(self, tp: Any) -> int | None:
        return None

    def assignment(self) -> set[Any]:
        return set()

    async def position(self, tp: Any) -> int:
        raise AssertionError("nothing is assigned")


class ProcessDied(BaseException):
    """Raised where a real process would have been killed."""


@dataclass
class MemorySink:
    """Keeps ids, as Postgres does, so that a replayed window inserts nothing."""

    prediction_ids: set[int] = field(default_factory=set)
    feedback_ids: set[int] = field(default_factory=set)
    dead_letters: set[tuple[str, int, int]] = field(default_factory=set)
    closed: bool = False

    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        new_predictions = {p.prediction_id.int for p in contents.predictions}
        new_predictions -= self.prediction_ids
        if resolve_after is not None:
            await resolve_after()
        new_feedback = {f.feedback_id.int for f in contents.feedback} - self.feedback_ids
        new_dead = {(d.topic, d.kafka_partition, d.kafka_offset) for d in contents.dead_letters}
        new_dead -= self.dead_letters
        self.prediction_ids |= new_predictions
        self.feedback_ids |= new_feedback
        self.dead_letters |= new_dead
        return WindowOutcome(len(new_predictions), len(new_feedback), len(new_dead), Counter(), 0)

    async def close(self) -> None:
        self.closed = True


def loop_over(
    consumer: FakeConsumer,
    sink: Sink,
    *,
    in_flight: int = 2,
    per_window: int = 5,
    window: str = "60s",
    revoke_flush_seconds: float = 20.0,
    telemetry: WorkerTelemetry | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    health: PipelineHealth | None = None,
    publish_dead_letters: Publish | None = None,
    retry_delay: float = 0.2,
) -> ConsumerLoop:
    """A consumer loop and its chain as the worker builds them, on a fake consumer."""
    registry = registry_from_mapping({"metrics": {"thumbs": {"type": "boolean"}}})
    pipeline = PipelineSettings(
        window=window, max_window_events=per_window, windows_in_flight=in_flight
    )
    parts = ChainParts(
        consumer=consumer,
        decoder=Decoder(registry, TOPICS, pipeline.retention),
        sink=sink,
        publish_dead_letters=publish_dead_letters,
        clock=SystemClock(),
        telemetry=telemetry or WorkerTelemetry(),
        pipeline=pipeline,
        partition_of=TP,
        health=health or PipelineHealth(),
        retry_delays=(retry_delay, 10 * retry_delay),
    )
    return ConsumerLoop(
        consumer,
        TOPICS.inputs,
        parts.build,
        parts.telemetry,
        fetch_max_records=pipeline.fetch_max_records,
        revoke_flush_seconds=revoke_flush_seconds,
        monotonic=monotonic,
        health=parts.health,
    )


async def run_until_all_committed(loop: ConsumerLoop, consumer: FakeConsumer) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    async with asyncio.timeout(10):
        await consumer.all_committed.wait()
    stopping.set()
    await task
