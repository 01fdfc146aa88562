"""Assembles one worker: the Kafka consumer, the chain of steps, the Postgres sink, the
dead-letter producer, retention and health.  ``Worker`` owns their lifecycles; the process host
(``workers.host.app``, a faust app) starts and stops it, runs ``apply_retention`` on a timer and
serves ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ingest.kafka_client import client_options, start_producer
from ingest.metrics.registry import MetricRegistry
from ingest.topics import TopicNames, create_topics
from workers.clock import Clock, SystemClock
from workers.health import PipelineHealth
from workers.host.startup import ensure_schema
from workers.host.waiting import until_it_answers
from workers.postgres.metric_definitions import kept_fresh
from workers.postgres.read_model_applier import ReadModelApplier
from workers.postgres.retention import apply_retention
from workers.postgres.sink import PostgresSink
from workers.settings import Settings
from workers.stream.chain import ChainParts
from workers.stream.consumer_loop import ConsumerLoop
from workers.stream.dead_letters import (
    DEAD_LETTER_RECORD_BYTES,
    RECORD_OVERHEAD_BYTES,
    dead_letter_record,
)
from workers.stream.decode import DeadLetter, Decoder
from workers.telemetry import WorkerTelemetry

log = logging.getLogger("feedbackflow.worker")

# How long the broker may hold a fetch that finds nothing new.  aiokafka keeps one fetch in flight
# per broker, so a fetch of partitions read to their end blocked the refetch of every other
# partition for as long as the broker held it: with Kafka's default, draining a backlog stalled
# whenever some partitions were read out before others (docs/performance.md).  An idle worker
# asks ten times a second instead of twice: nothing for a broker.
FETCH_MAX_WAIT_MS = 100
# How long records a partition fetched may sit unread before aiokafka fetches for the others.
PREFETCH_BACKOFF_SECONDS = 0.01

# A consume loop that has not turned for this long is reported unhealthy: it turns at least
# every fetch wait (half a second) even while it waits on a write.
STALLED_AFTER_SECONDS = 60.0


def refetch_drained_partitions_sooner(consumer: AIOKafkaConsumer) -> None:
    """Let the fetcher refill drained partitions while another still holds unread records.

    aiokafka sends no fetch to a broker while any of its partitions holds records younger than
    a fixed 100 ms (``Fetcher._prefetch_backoff``; the consumer has no setting for it).  While a
    backlog drains, feedback partitions hold records on purpose (workers/stream/hold_back.py), so
    every hold stalled the predictions they wait for by that long, a measurable share of a
    drain (docs/performance.md).  A private attribute of a pinned dependency: the test
    tests/integration/test_worker_consumer.py fails if an upgrade renames it."""
    fetcher = consumer._fetcher  # noqa: SLF001
    if not hasattr(fetcher, "_prefetch_backoff"):
        raise RuntimeError("aiokafka's Fetcher has no _prefetch_backoff: re-check this tuning")
    fetcher._prefetch_backoff = PREFETCH_BACKOFF_SECONDS  # noqa: SLF001


@dataclass
class Worker:
    settings: Settings
    registry: MetricRegistry
    clock: Clock = field(default_factory=SystemClock)
    telemetry: WorkerTelemetry = field(default_factory=WorkerTelemetry)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    monotonic: Callable[[], float] = time.monotonic
    loop: ConsumerLoop | None = None
    sink: PostgresSink | None = None
    health: PipelineHealth = field(default_factory=PipelineHealth)
    _dead_letter_producer: AIOKafkaProducer | None = None

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.topic_prefix)

    async def _publish_dead_letters(self, dead_letters: Sequence[DeadLetter]) -> None:
        producer = self._dead_letter_producer
        if producer is None:
            return
        futures = [
            await producer.send(self.topics.dead_letter, value=value, key=key, headers=headers)
            for value, key, headers in map(dead_letter_record, dead_letters)
        ]
        await asyncio.gather(*futures)

    def verdict(self, *, needs_partitions: bool = False) -> tuple[bool, str, dict[str, object]]:
        """Unhealthy while starting, while the consume loop has stopped turning, and whenever
        the pipeline's own verdict says so (workers.health); ``needs_partitions`` for
        readiness: a worker without partitions is alive but serves nothing."""
        verdict = self.health.verdict(needs_partitions=needs_partitions)
        body = verdict.as_json()
        if self.loop is None:
            return False, "starting", {**body, "status": "unhealthy", "detail": "starting"}
        stalled = self.monotonic() - self.loop.last_progress
        if stalled > STALLED_AFTER_SECONDS:
            detail = f"consume loop has not turned for {stalled:.0f}s"
            return False, detail, {**body, "status": "unhealthy", "detail": detail}
        return verdict.healthy, verdict.reason, body

    async def run(self) -> None:
        settings, pipeline = self.settings, self.settings.pipeline
        self.health.window_seconds = pipeline.window.total_seconds()
        self.telemetry.window_seconds.set(self.health.window_seconds)
        self.telemetry.start_known_labels(self.topics)
        self.health.monotonic = self.monotonic
        await until_it_answers("PostgreSQL", self._migrate, self.stopping, self.health)
        await until_it_answers(
            "Kafka",
            lambda: create_topics(settings, self.topics),
            self.stopping,
            self.health,
        )
        decoder = Decoder(self.registry, self.topics, pipeline.retention, pipeline.selectable_tags)
        async with kept_fresh(
            settings.database_url,
            self.registry,
            decoder.use,
            settings.metric_refresh_seconds,
        ) as refresh_metrics:
            await self._consume(decoder, refresh_metrics)

    async def _consume(
        self, decoder: Decoder, refresh_metrics: Callable[[], Awaitable[object]]
    ) -> None:
        settings, pipeline = self.settings, self.settings.pipeline
        consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            # The loop may spend a whole window write between fetches.
            max_poll_interval_ms=600_000,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 6, 500),
            # Static membership: a restarted worker with the same id takes its partitions back
            # at once instead of after a rebalance (docs/reliability.md).
            group_instance_id=settings.kafka_group_instance_id,
        )
        applier = ReadModelApplier(settings.database_url, self._applied)
        self.sink = sink = PostgresSink(
            settings.database_url,
            pipeline.retention,
            pipeline.selectable_tags,
            written=applier.notify,
        )
        applier.notify()  # notes a worker committed before it stopped
        parts = ChainParts(
            consumer=consumer,
            decoder=decoder,
            sink=sink,
            publish_dead_letters=self._publish_dead_letters,
            clock=self.clock,
            telemetry=self.telemetry,
            pipeline=pipeline,
            partition_of=TopicPartition,
            health=self.health,
            refresh_metrics=refresh_metrics,
        )
        self.loop = ConsumerLoop(
            consumer,
            self.topics.inputs,
            parts.build,
            self.telemetry,
            fetch_max_records=pipeline.fetch_max_records,
            revoke_flush_seconds=pipeline.revoke_flush_seconds,
            monotonic=self.monotonic,
            health=self.health,
        )
        producers: list[AIOKafkaProducer] = []

        async def start_dead_letter_producer() -> None:
            producers.append(
                await start_producer(
                    settings,
                    linger_ms=5,
                    max_request_size=DEAD_LETTER_RECORD_BYTES + RECORD_OVERHEAD_BYTES,
                )
            )

        await until_it_answers("Kafka", start_dead_letter_producer, self.stopping, self.health)
        self._dead_letter_producer = producer = producers[0]
        self.loop.subscribe()
        await until_it_answers("Kafka", consumer.start, self.stopping, self.health)
        refetch_drained_partitions_sooner(consumer)
        self.health.start()
        try:
            await self.loop.run(self.stopping)
        finally:
            await consumer.stop()
            await producer.stop()
            await sink.close()
            await applier.close()

    def _applied(self, notes: int, seconds: float) -> None:
        self.telemetry.read_model_apply_seconds.observe(seconds)
        self.telemetry.read_model_notes_applied.inc(notes)

    async def _migrate(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await ensure_schema(conn, self.settings)  # or refuses a schema behind the code
        finally:
            await conn.close()

    async def apply_retention(self) -> None:
        """Expire pending feedback past retention and drop old day partitions (on a timer)."""
        try:
            conn = await asyncpg.connect(self.settings.database_url)
            try:
                result = await apply_retention(
                    conn, self.settings.pipeline.retention, self.clock.now()
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("retention run failed, will retry: %r", exc)
            return
        for name in result.dropped:
            self.telemetry.partitions_dropped.labels(name.rsplit("_p", 1)[0]).inc()
        if result.dropped:
            log.info("retention dropped %s", ", ".join(result.dropped))
