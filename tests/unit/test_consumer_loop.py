"""The consumer loop and its chain with windows in flight: writes overlap, offset commits stay
in window order; revocation joins the chain by a deadline.

The consumer and the sink are plain fakes (pure logic); the real ones are exercised end to end in
tests/integration.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import pytest
from pydantic import ValidationError

from tests.fakes import TOPICS, TP, FakeConsumer, loop_over, run_until_all_committed
from workers.stream.consumer_loop import ConsumerLoop
from workers.stream.sink import WindowOutcome
from workers.stream.window import WindowContents
from workers.testing.traffic import Record, prediction_payload

# How long window 1's write takes before it fails, in the failing-window test.
FAILS_AFTER = 0.2


@dataclass
class FakeSink:
    """Writes take the time the test sets per window (named by its next offset); logs overlap."""

    delays: dict[int, float]
    log: list[str]
    closed: bool = False

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

    async def close(self) -> None:
        self.closed = True


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


async def test_a_slow_window_overlaps_the_next_and_still_commits_first() -> None:
    log: list[str] = []
    delays = {5: 0.3}  # the first window's write is slow, the second's instant
    consumer = FakeConsumer(_batches(windows=3, per_window=5), log=log)
    loop = loop_over(consumer, FakeSink(delays, log), in_flight=2, per_window=5)
    await run_until_all_committed(loop, consumer)

    # Window 2 (offsets 5-9) was written while window 1 was still being written ...
    assert log.index("start 10") < log.index("done 5")
    # ... its staging done first, but it resolved its feedback only after window 1 committed ...
    assert log.index("resolve 10") > log.index("done 5")
    # ... and offsets were committed in window order: never past a window not yet written.
    commits = [(i, int(entry.split()[1])) for i, entry in enumerate(log) if "commit" in entry]
    assert [offset for _, offset in commits] == sorted(offset for _, offset in commits)
    assert commits[-1][1] == 15
    for at, offset in commits:
        assert all(log.index(f"done {end}") < at for end in (5, 10, 15) if end <= offset)


async def test_one_in_flight_writes_one_window_at_a_time() -> None:
    log: list[str] = []
    delays = {5: 0.2}
    consumer = FakeConsumer(_batches(windows=2, per_window=5))
    loop = loop_over(consumer, FakeSink(delays, log), in_flight=1, per_window=5)
    await run_until_all_committed(loop, consumer)
    assert log == ["start 5", "resolve 5", "done 5", "start 10", "resolve 10", "done 10"]


async def test_a_failed_window_stops_later_windows_from_committing() -> None:
    class FailingSink(FakeSink):
        async def write(
            self,
            contents: WindowContents,
            now: datetime,
            resolve_after: Callable[[], Awaitable[object]] | None = None,
        ) -> WindowOutcome:
            if max(contents.next_offsets.values()) == 5:
                await asyncio.sleep(FAILS_AFTER)  # the write's length is the scenario
                raise RuntimeError("boom")
            return await super().write(contents, now, resolve_after)

    log: list[str] = []
    consumer = FakeConsumer(_batches(windows=2, per_window=5))
    loop = loop_over(consumer, FailingSink({}, log), in_flight=2, per_window=5)
    with pytest.raises(RuntimeError, match="boom"):
        await loop.run(asyncio.Event())
    assert consumer.commits == []  # not committed past the failed window 1


def test_more_than_two_in_flight_is_refused() -> None:
    with pytest.raises(ValidationError, match="windows_in_flight"):
        loop_over(FakeConsumer([]), FakeSink({}, []), in_flight=3, per_window=5)


async def test_a_revocation_writes_and_commits_what_was_read_before_the_partitions_move() -> None:
    log: list[str] = []
    consumer = FakeConsumer(_batches(windows=1, per_window=5))
    # The window is far from due (an hour, and a cap of 100): only the revocation closes it.
    loop = loop_over(consumer, FakeSink({}, log), in_flight=2, per_window=100, window="1h")
    first_chain = loop.chain
    stopping = asyncio.Event()
    task = await _revoke_once_the_window_holds(loop, consumer, stopping, events=5)
    assert consumer.commits == [{TP(TOPICS.predictions, 0): 5}]
    assert loop.chain is not first_chain  # built anew for the next assignment
    stopping.set()
    await task


async def test_a_revocation_past_its_deadline_abandons_the_window_uncommitted() -> None:
    log: list[str] = []
    consumer = FakeConsumer(_batches(windows=1, per_window=5))
    loop = loop_over(
        consumer,
        FakeSink({5: 30.0}, log),  # a write that outlasts the deadline
        in_flight=2,
        per_window=100,
        window="1h",
        revoke_flush_seconds=0.2,
    )
    first_chain = loop.chain
    stopping = asyncio.Event()
    task = await _revoke_once_the_window_holds(loop, consumer, stopping, events=5)
    assert log == ["start 5"]  # the write began, and was cancelled at the deadline
    assert consumer.commits == []
    assert loop.telemetry.windows.labels("abandoned")._value.get() == 1
    assert first_chain.window.buffer.events == 0
    stopping.set()
    await task
    assert consumer.commits == []  # the new chain had nothing: the replay is the next owner's


async def test_a_refused_commit_is_counted_and_the_loop_goes_on() -> None:
    log: list[str] = []
    consumer = FakeConsumer(_batches(windows=2, per_window=5), refuse=1)
    loop = loop_over(consumer, FakeSink({}, log), in_flight=1, per_window=5)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    async with asyncio.timeout(10):
        while not consumer.commits:
            await consumer.fetched.wait()
            consumer.fetched.clear()
    stopping.set()
    await task
    assert loop.telemetry.windows.labels("commit_refused")._value.get() == 1
    # The second window's commit carries the partition's offset past both windows.
    assert consumer.commits[-1] == {TP(TOPICS.predictions, 0): 10}


async def test_offsets_wait_for_an_earlier_window_even_when_a_later_write_finishes_first() -> None:
    """The writer's own guarantee, whatever the sink does with ``resolve_after``."""

    class EagerSink(FakeSink):
        async def write(
            self,
            contents: WindowContents,
            now: datetime,
            resolve_after: Callable[[], Awaitable[object]] | None = None,
        ) -> WindowOutcome:
            return await super().write(contents, now, None)  # resolves without waiting

    log: list[str] = []
    consumer = FakeConsumer(_batches(windows=2, per_window=5), log=log)
    # Slower than a fetch's wait, so that the later window is done at a poll before it.
    loop = loop_over(consumer, EagerSink({5: 2.0}, log), in_flight=2, per_window=5)
    await run_until_all_committed(loop, consumer)
    assert log.index("done 10") < log.index("done 5")  # the later window finished first ...
    assert all(log.index("done 5") < i for i, e in enumerate(log) if e.startswith("commit"))


async def _revoke_once_the_window_holds(
    loop: ConsumerLoop, consumer: FakeConsumer, stopping: asyncio.Event, events: int
) -> asyncio.Task[None]:
    """Run the loop until its window holds ``events``, then revoke its partitions; the loop's
    task, still running."""
    window = loop.chain.window
    task = asyncio.create_task(loop.run(stopping))
    async with asyncio.timeout(10):
        while window.buffer.events < events:
            await consumer.fetched.wait()
            consumer.fetched.clear()
        await loop.revoke()
    return task
