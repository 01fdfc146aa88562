"""WindowedJoin with windows in flight: writes overlap, offset commits stay in window order.

The consumer and the sink are plain fakes (pure logic); the real ones are exercised end to end in
tests/integration.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.metrics.registry import registry_from_mapping
from ingest.topics import TopicNames
from workers.postgres.sink import PostgresSink, WindowOutcome
from workers.stream.consumer_loop import WindowedJoin
from workers.stream.decode import Decoder
from workers.stream.window import WindowBuffer, WindowContents
from workers.telemetry import WorkerTelemetry
from workers.testing.traffic import Record, prediction_payload

TOPICS = TopicNames("unit")
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class FakeConsumer:
    """Hands out one prepared batch per ``getmany`` and records every commit."""

    def __init__(self, batches: list[list[Record]]) -> None:
        self.batches = batches
        self.commits: list[dict[Any, int]] = []
        self.all_committed = asyncio.Event()
        self._expected = len(batches)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        await asyncio.sleep(0)
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch = self.batches.pop(0)
        return {TP(batch[0].topic, batch[0].partition): batch}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))
        if len(self.commits) >= self._expected:
            self.all_committed.set()

    def highwater(self, tp: Any) -> int | None:
        return None

    def assignment(self) -> set[Any]:
        return set()


class FakeConnection:
    def terminate(self) -> None:
        pass

    async def close(self, **options: float) -> None:
        pass


@dataclass
class FakeSink:
    """Writes take the time the test sets per window (named by its next offset); logs overlap."""

    delays: dict[int, float]
    log: list[str]
    conn: FakeConnection = field(default_factory=FakeConnection)

    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        """The delay stands for staging and inserting predictions; then, like PostgresSink,
        resolution waits for ``resolve_after``."""
        name = max(contents.next_offsets.values())
        self.log.append(f"start {name}")
        await asyncio.sleep(self.delays.get(name, 0.0))
        if resolve_after is not None:
            await resolve_after()
        self.log.append(f"resolve {name}")
        self.log.append(f"done {name}")
        return WindowOutcome(len(contents.predictions), 0, 0, Counter(), 0)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def _batches(windows: int, per_window: int) -> list[list[Record]]:
    rng = random.Random(1)
    now_ms = int(time.time() * 1000)
    batches = []
    offset = 0
    for _ in range(windows):
        records = []
        for _ in range(per_window):
            _, value = prediction_payload(rng, now_ms)
            records.append(Record(TOPICS.predictions, 0, offset, now_ms, None, value))
            offset += 1
        batches.append(records)
    return batches


def _pipeline(
    consumer: FakeConsumer, sinks: list[FakeSink], in_flight: int, per_window: int
) -> WindowedJoin:
    registry = registry_from_mapping({"metrics": {}})
    pending = list(sinks)

    async def connect() -> PostgresSink:
        return pending.pop(0)  # type: ignore[return-value]

    return WindowedJoin(
        consumer=consumer,
        topics=TOPICS.inputs,
        sink_connect=connect,
        decoder=Decoder(registry, TOPICS),
        window=WindowBuffer(length_seconds=60, max_events=per_window, monotonic=time.monotonic),
        clock=FixedClock(),
        telemetry=WorkerTelemetry(),
        max_windows_in_flight=in_flight,
    )


async def _run_until_all_committed(pipeline: WindowedJoin, consumer: FakeConsumer) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stopping))
    async with asyncio.timeout(10):
        await consumer.all_committed.wait()
    stopping.set()
    await task


async def test_a_slow_window_overlaps_the_next_and_still_commits_first() -> None:
    log: list[str] = []
    delays = {5: 0.3}  # the first window's write is slow, the second's instant
    sinks = [FakeSink(delays, log), FakeSink(delays, log)]
    consumer = FakeConsumer(_batches(windows=3, per_window=5))
    pipeline = _pipeline(consumer, sinks, in_flight=2, per_window=5)
    await _run_until_all_committed(pipeline, consumer)

    # Window 2 (offsets 5-9) was written while window 1 was still being written ...
    assert log.index("start 10") < log.index("done 5")
    # ... its staging done first, but it resolved its feedback only after window 1 committed ...
    assert log.index("resolve 10") > log.index("done 5")
    # ... and offsets were committed in window order, each once.
    tp = TP(TOPICS.predictions, 0)
    assert [c[tp] for c in consumer.commits] == [5, 10, 15]


async def test_one_in_flight_writes_one_window_at_a_time() -> None:
    log: list[str] = []
    delays = {5: 0.2}
    sinks = [FakeSink(delays, log), FakeSink(delays, log)]
    consumer = FakeConsumer(_batches(windows=2, per_window=5))
    pipeline = _pipeline(consumer, sinks, in_flight=1, per_window=5)
    await _run_until_all_committed(pipeline, consumer)
    assert log == ["start 5", "resolve 5", "done 5", "start 10", "resolve 10", "done 10"]
    assert len(pipeline.idle_sinks) == 1  # the one connection was reused


async def test_a_failed_window_stops_later_windows_from_committing() -> None:
    class FailingSink(FakeSink):
        async def write(
            self,
            contents: WindowContents,
            now: datetime,
            resolve_after: Callable[[], Awaitable[object]] | None = None,
        ) -> WindowOutcome:
            await asyncio.sleep(0.2)
            raise RuntimeError("boom")

    log: list[str] = []
    sinks = [FailingSink({}, log), FakeSink({}, log)]
    consumer = FakeConsumer(_batches(windows=2, per_window=5))
    pipeline = _pipeline(consumer, sinks, in_flight=2, per_window=5)
    with pytest.raises(RuntimeError, match="boom"):
        await pipeline.run(asyncio.Event())
    # Window 2 was written, resolving once window 1 had failed (it waits for no one then) ...
    assert log == ["start 10", "resolve 10", "done 10"]
    assert consumer.commits == []  # ... but not committed past the failed window 1


def test_more_than_two_in_flight_is_refused() -> None:
    with pytest.raises(ValueError, match="max_windows_in_flight"):
        _pipeline(FakeConsumer([]), [], in_flight=3, per_window=5)
