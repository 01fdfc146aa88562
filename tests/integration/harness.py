"""Runs real workers against the session's broker and a test's database, and waits on Postgres."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.metrics.registry import MetricRegistry, registry_from_mapping
from ingest.sdk.producer import FeedbackflowProducer
from ingest.topics import TopicNames, create_topics
from workers.clock import ShiftedClock
from workers.devstack.servers import free_port
from workers.host.worker import Worker
from workers.postgres.read_model_applier import notes_waiting
from workers.settings import PipelineSettings, Settings

TEST_METRICS: dict[str, Any] = {
    "metrics": {
        "haiku_rating": {"type": "boolean", "level": "inference", "optimize": "max"},
        "haiku_score": {"type": "float", "min": 1, "max": 5},
        "tone": {"type": "categorical", "categories": ["formal", "casual"]},
        "task_success": {"type": "boolean", "level": "episode"},
        "judge_verdict": {
            "type": "json",
            "schema": {
                "type": "object",
                "required": ["pass"],
                "properties": {"pass": {"type": "boolean"}},
            },
        },
    },
}


def metric_registry() -> MetricRegistry:
    return registry_from_mapping(TEST_METRICS)


# Windows of a second: tests wait on what lands, and a window is what they wait for.
TEST_PIPELINE: dict[str, Any] = {"window": "1s", "retention": "90d", "max_window_events": 5000}


def isolated_settings(bootstrap: str, database_url: str, **pipeline: Any) -> Settings:
    """Settings of one test: its own topics and group, 1 s windows unless ``pipeline`` says."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return Settings(
        kafka_bootstrap=bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        consumer_group=f"{prefix}-group",
        http_port=0,
        kafka_idempotence=False,
        kafka_session_timeout_ms=6_000,
        pipeline=PipelineSettings(**{**TEST_PIPELINE, **pipeline}),
    )


async def process_settings(
    bootstrap: str, database_url: str, partitions: int = 2, **updates: Any
) -> Settings:
    """Settings of a worker process a test starts (its own port for /metrics and /health),
    with the topics created."""
    settings = isolated_settings(bootstrap, database_url).model_copy(
        update={"http_port": free_port(), **updates}
    )
    await make_topics(settings, partitions=partitions)
    return settings


async def make_topics(settings: Settings, partitions: int = 2) -> TopicNames:
    topics = TopicNames(settings.topic_prefix)
    await create_topics(settings.kafka_bootstrap, topics, partitions=partitions)
    return topics


@asynccontextmanager
async def running_worker(
    settings: Settings, registry: MetricRegistry, clock: ShiftedClock | None = None
) -> AsyncIterator[Worker]:
    worker = Worker(settings, registry, clock=clock or ShiftedClock())
    task = asyncio.create_task(worker.run(), name="worker")
    try:
        yield worker
    finally:
        worker.stopping.set()
        await asyncio.wait_for(task, timeout=30)


@dataclass
class LivePipeline:
    """One test's running pipeline: its own topics and consumer group, a worker with a shiftable
    clock on the test's database, and a producer."""

    settings: Settings
    registry: MetricRegistry
    topics: TopicNames
    clock: ShiftedClock
    worker: Worker
    ff: FeedbackflowProducer


@asynccontextmanager
async def live_pipeline(
    bootstrap: str,
    database_url: str,
    *,
    partitions: int = 2,
    registry: MetricRegistry | None = None,
    **pipeline: Any,
) -> AsyncIterator[LivePipeline]:
    settings = isolated_settings(bootstrap, database_url, **pipeline)
    registry = registry or metric_registry()
    topics = await make_topics(settings, partitions=partitions)
    clock = ShiftedClock()
    async with (
        running_worker(settings, registry, clock) as worker,
        producer(settings, registry) as ff,
    ):
        yield LivePipeline(settings, registry, topics, clock, worker, ff)


@asynccontextmanager
async def producer(
    settings: Settings, registry: MetricRegistry | None = None
) -> AsyncIterator[FeedbackflowProducer]:
    async with FeedbackflowProducer(
        settings.kafka_bootstrap,
        topics=TopicNames(settings.topic_prefix),
        registry=registry,
        idempotent=settings.kafka_idempotence,
    ) as p:
        yield p


# How often wait_until asks again: it waits on a condition, polled.
POLL_EVERY = 0.1


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(POLL_EVERY)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


async def committed_to_the_end(settings: Settings) -> bool:
    """Whether the workers' group has committed every input partition up to its end: then
    everything produced so far is in Postgres, and nothing more will be written."""
    topics = TopicNames(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()  # never subscribes: it only asks the group's coordinator
    try:
        await consumer.topics()  # the cluster's metadata, partitions included
        partitions = [
            TopicPartition(topic, p)
            for topic in topics.inputs
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


async def count(db: asyncpg.Connection, sql: str, *args: Any) -> int:
    value = await db.fetchval(sql, *args)
    return int(value or 0)


async def wait_for_count(
    db: asyncpg.Connection, sql: str, expected: int, *args: Any, within: float = 30.0
) -> None:
    last: list[int] = []

    async def check() -> bool:
        last[:] = [await count(db, sql, *args)]
        return last[0] >= expected

    try:
        await wait_until(check, within, what=f"{sql!r} to reach {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last value {last})") from None


async def wait_for_read_model(db: asyncpg.Connection, within: float = 30.0) -> None:
    """Until the worker's applier has folded every committed window's notes into the read model
    (workers.postgres.read_model_applier): wait for the rows first, then this."""

    async def caught_up() -> bool:
        return await notes_waiting(db) == 0

    await wait_until(caught_up, within, what="the read model to fold in every note")


PROCESS_CONFIG = """
[pipeline]
window = "4s"
retention = "90d"

[metrics.haiku_rating]
type = "boolean"
level = "inference"
"""


def start_worker_process(settings: Settings, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FEEDBACKFLOW_DATABASE_URL": settings.database_url,
        "FEEDBACKFLOW_CONFIG": str(config),
        "FEEDBACKFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "FEEDBACKFLOW_CONSUMER_GROUP": settings.consumer_group,
        "FEEDBACKFLOW_HTTP_PORT": str(settings.http_port),
        "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
        "FEEDBACKFLOW_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
    }
    if settings.kafka_group_instance_id is not None:
        env["FEEDBACKFLOW_KAFKA_GROUP_INSTANCE_ID"] = settings.kafka_group_instance_id
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker"], env=env, stdout=out, stderr=out
        )


def consumed_per_metrics(port: int) -> float:
    """Messages the worker has read, from its own /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("feedbackflow_events_consumed_total")
    )
