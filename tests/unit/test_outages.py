"""Outages are waited out, not died of, and the health check says so meanwhile."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from tests.fakes import TOPICS, TP, FakeConsumer, MemorySink, loop_over, run_until_all_committed
from workers.health import PipelineHealth
from workers.stream.dead_letters import DEAD_LETTER_RECORD_BYTES, dead_letter_record
from workers.stream.decode import DeadLetter
from workers.stream.sink import SinkUnavailable, WindowOutcome
from workers.stream.window import WindowContents
from workers.testing.traffic import Record, prediction_payload


def _batches(windows: int, per_window: int = 5) -> list[list[Record]]:
    rng, now_ms = random.Random(4), int(time.time() * 1000)
    return [
        [
            Record(TOPICS.predictions, 0, w * per_window + i, now_ms, None, v)
            for i, (_, v) in enumerate(prediction_payload(rng, now_ms) for _ in range(per_window))
        ]
        for w in range(windows)
    ]


@dataclass
class AwaySink(MemorySink):
    """Unavailable until ``back`` is set, as a database that went away; counts the attempts."""

    back: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: int = 0
    tried_enough: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        if not self.back.is_set():
            self.attempts += 1
            if self.attempts >= 12:  # more than the old limit of 8 attempts
                self.tried_enough.set()
            raise SinkUnavailable("connection refused") from ConnectionRefusedError()
        return await super().write(contents, now, resolve_after)


async def test_a_database_away_for_many_attempts_is_waited_out_and_health_says_why() -> None:
    consumer, sink = FakeConsumer(_batches(2)), AwaySink()
    health = PipelineHealth()
    health.start()
    loop = loop_over(consumer, sink, health=health, retry_delay=0.001)
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    async with asyncio.timeout(10):
        await sink.tried_enough.wait()
        verdict = health.verdict(needs_partitions=False)
        assert not verdict.healthy
        assert verdict.reason.startswith("write failing for ")
        assert "ConnectionRefusedError" in verdict.reason
        assert not task.done()  # waiting it out, not died of it
        sink.back.set()
        await consumer.all_committed.wait()
    assert health.verdict(needs_partitions=False).healthy
    assert len(sink.prediction_ids) == 10
    stopping.set()
    await task


class BrokerAwayConsumer(FakeConsumer):
    """Commits fail with a connection error ``away`` times, then work."""

    def __init__(self, batches: list[list[Record]], away: int) -> None:
        super().__init__(batches)
        self.away = away

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        if self.away:
            self.away -= 1
            raise KafkaConnectionError("broker away")
        await super().commit(offsets)


async def test_a_commit_refused_by_an_absent_broker_is_retried_and_nothing_is_lost() -> None:
    consumer = BrokerAwayConsumer(_batches(2), away=2)
    health = PipelineHealth()
    loop = loop_over(consumer, MemorySink(), health=health)
    await run_until_all_committed(loop, consumer)
    assert consumer.commits[-1] == {TP(TOPICS.predictions, 0): 10}
    assert loop.telemetry.windows.labels("commit_failed")._value.get() == 2
    assert loop.telemetry.windows.labels("written")._value.get() == 2  # counted once, when done


async def test_dead_letters_the_topic_refuses_for_good_do_not_hold_the_offsets() -> None:
    async def refuse(dead: object) -> None:
        raise MessageSizeTooLargeError("too large")

    records = [Record(TOPICS.feedback, 0, i, int(time.time() * 1000), b"k", b"{") for i in range(5)]
    consumer = FakeConsumer([records])
    loop = loop_over(consumer, MemorySink(), publish_dead_letters=refuse)
    await run_until_all_committed(loop, consumer)
    assert loop.telemetry.dead_letters_unpublished._value.get() == 5


async def test_dead_letters_wait_for_a_broker_that_is_away() -> None:
    calls: list[int] = []

    async def away_twice(dead: object) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise KafkaConnectionError("broker away")

    records = [Record(TOPICS.feedback, 0, i, int(time.time() * 1000), b"k", b"{") for i in range(5)]
    consumer = FakeConsumer([records])
    loop = loop_over(consumer, MemorySink(), publish_dead_letters=away_twice)
    await run_until_all_committed(loop, consumer)
    assert len(calls) == 3  # retried until published, and only then committed
    assert loop.telemetry.dead_letters_unpublished._value.get() == 0


def test_a_dead_letter_of_any_size_fits_its_topic() -> None:
    big = DeadLetter(
        "t.feedback",
        0,
        1,
        datetime.now(),
        b"k" * 50_000,
        b"x" * 1_500_000,
        "(payload)",
        "r" * 10_000,
        datetime.now(),
    )
    payload, key, headers = dead_letter_record(big)
    assert len(payload) == DEAD_LETTER_RECORD_BYTES
    assert key is not None
    assert len(key) <= 16 * 1024
    assert dict(headers)["feedbackflow-truncated"] == b"payload 1500000 bytes"
    assert len(dict(headers)["feedbackflow-reason"]) == 4096
    small = big._replace(payload=b"{", message_key=b"k")
    assert dead_letter_record(small)[:2] == (b"{", b"k")


def test_a_pipeline_that_commits_nothing_while_records_wait_is_unhealthy() -> None:
    now = [100.0]
    health = PipelineHealth(window_seconds=1.0, monotonic=lambda: now[0])
    health.start()
    health.partitions, health.lag = 4, 0
    health.committed()
    now[0] += 120
    assert health.verdict().healthy  # idle: nothing waits
    health.lag = 500
    verdict = health.verdict()
    assert not verdict.healthy
    assert verdict.reason == "no commit for 120s with 500 records waiting"
    health.committed()
    assert health.verdict().healthy
