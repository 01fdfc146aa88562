"""The two ceilings the worker cannot beat, measured on the very messages it consumes.

1. Consuming + validating: plain aiokafka ``getmany(max_records=10000)`` and one pydantic
   ``model_validate_json`` per message -- the worker's per-event work without the window, the
   join or Postgres.
2. Writing: asyncpg ``copy_records_to_table`` of the already-decoded rows into the same tables --
   Postgres' bulk-load speed without decoding, staging, idempotence checks or the join.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.topics import TopicNames
from ingest.wire.events import Feedback, Prediction
from workers.postgres import join_sql
from workers.postgres.partitions import PartitionCatalog, days_of
from workers.stream.decode import DecodedBatch, FeedbackRow, as_time

FETCH_MAX_RECORDS = 10_000
COPY_CHUNK = 50_000


@dataclass(frozen=True)
class Throughput:
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def consume_ceiling(bootstrap: str, topics: TopicNames, expected: int) -> Throughput:
    """Read both topics from the beginning (manual assignment: no group join) and validate."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions: list[TopicPartition] = []
        for topic in topics.inputs:
            found = consumer.partitions_for_topic(topic)
            while not found:
                await asyncio.sleep(0.1)
                await consumer._client.force_metadata_update()  # noqa: SLF001
                found = consumer.partitions_for_topic(topic)
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        got, first = 0, 0.0
        while got < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            if batches and not first:
                first = time.perf_counter()
            for tp, records in batches.items():
                model = Feedback if tp.topic == topics.feedback else Prediction
                for record in records:
                    model.model_validate_json(record.value)
                got += len(records)
        return Throughput(got, time.perf_counter() - first)
    finally:
        await consumer.stop()


async def ensure_days(conn: asyncpg.Connection, tables: tuple[str, ...], days: set[date]) -> None:
    catalog = PartitionCatalog()
    for table in tables:
        await catalog.ensure(conn, table, days)


def recent_days(back: int, ahead: int = 2) -> set[date]:
    today = datetime.now(UTC).date()
    return {today + timedelta(days=d) for d in range(-back, ahead + 1)}


async def write_ceiling(database_url: str, rows: DecodedBatch) -> Throughput:
    """COPY the decoded rows into ``predictions`` and ``feedback`` in 50k-row transactions."""
    conn = await asyncpg.connect(database_url)
    try:
        days = days_of(p.ts for p in rows.predictions) | days_of(f.ts for f in rows.feedback)
        await ensure_days(conn, ("predictions", "feedback"), days)
        # The tables' rows, which the worker's SQL makes of its staged ones (join_sql.STAGED_*):
        # times from micros, a default join key (None) as the id as text, and the feedback's
        # join key and target kind from its target.
        predictions = [
            (
                p.prediction_id,
                str(p.prediction_id) if p.join_key is None else p.join_key,
                as_time(p.ts),
                *p[3:-1],
                as_time(p.ingested_at),
            )
            for p in rows.predictions
        ]
        feedback = [
            (
                f.feedback_id,
                f.target_join_key or str(f.target_prediction_id or f.target_episode_id),
                as_time(f.ts),
                f.metric,
                f.metric_type,
                "prediction_id"
                if f.target_prediction_id
                else "join_key"
                if f.target_join_key
                else "episode_id",
                f.target_prediction_id,
                f.target_join_key,
                f.target_episode_id,
                None if f.target_id_time is None else as_time(f.target_id_time),
                *f[FeedbackRow._fields.index("value_bool") : -1],
                as_time(f.ingested_at),
            )
            for f in rows.feedback
        ]
        started = time.perf_counter()
        for table, records, columns in (
            ("predictions", predictions, join_sql.PREDICTION_COLUMNS),
            ("feedback", feedback, join_sql.FEEDBACK_COLUMNS),
        ):
            for i in range(0, len(records), COPY_CHUNK):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        table,
                        schema_name="feedbackflow",
                        records=records[i : i + COPY_CHUNK],
                        columns=columns,
                    )
        seconds = time.perf_counter() - started
        return Throughput(len(rows.predictions) + len(rows.feedback), seconds)
    finally:
        await conn.close()
