"""Where checked rows go: Kafka (the default, through the SDK's producer settings) or, with
``--direct``, Postgres through the worker's own sink (``workers.postgres.sink``): the same
transaction per batch, the same join SQL, the same statuses as a window of the worker.

``write`` returns once the batch is durable (acked by the broker with acks=all, or committed):
only then may the checkpoint move past it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from ingest.backfill.checking import CheckedBatch
from ingest.kafka_client import start_producer
from workers.postgres.read_model_applier import (
    VACUUM_EVERY_NOTES,
    apply_read_model,
    vacuum_notes,
)
from workers.postgres.sink import DATA_ERRORS, SinkConnection
from workers.settings import Settings
from workers.stream.window import WindowContents

# A record batch's size at most: as the SDK's ceiling in bench/backfill_export.py produces.
RECORD_BATCH_BYTES = 1 << 20


class Destination(Protocol):
    async def write(self, batch: CheckedBatch) -> None: ...
    async def close(self) -> None: ...


class KafkaDestination:
    """Publishes the rows' bytes as they were checked, keyed by join key like the SDK, to the
    partition the SDK's ``send`` would pick (aiokafka's default partitioner on the key).

    A batch's rows are appended to one record batch per partition (``create_batch`` and
    ``send_batch``) instead of a ``send`` per row: ``send`` costs a future, a partitioner call
    and a lookup of the accumulator per row, which was most of this path's time
    (docs/performance.md).  A partition's rows keep the file's order: its record batches are
    queued one after the other."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, list[int]] = {}

    @classmethod
    async def open(cls, settings: Settings) -> KafkaDestination:
        # Whole batches are flushed at once: larger produce requests, fewer round trips.
        producer = await start_producer(settings, linger_ms=20, max_batch_size=RECORD_BATCH_BYTES)
        return cls(producer)

    async def write(self, batch: CheckedBatch) -> None:
        producer = self.producer
        partitioner = DefaultPartitioner()  # the producer's: rows land where ``send`` puts them
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        sent: list[asyncio.Future[Any]] = []
        for row in batch.accepted:
            topic = row.topic
            every = self._partitions.get(topic) or await self._partitions_of(topic)
            place = (topic, partitioner(row.key, every, every))  # a key: never "available"
            builder = open_batches.get(place)
            if builder is None:
                builder = open_batches[place] = producer.create_batch()
            if builder.append(key=row.key, value=row.value, timestamp=None) is None:
                sent.append(await producer.send_batch(builder, topic, partition=place[1]))
                builder = open_batches[place] = producer.create_batch()
                builder.append(key=row.key, value=row.value, timestamp=None)
        for (topic, partition), builder in open_batches.items():
            sent.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*sent)  # acked (acks=all): durable

    async def _partitions_of(self, topic: str) -> list[int]:
        """The topic's partitions, sorted, as ``send`` reads them (once per run)."""
        self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return self._partitions[topic]

    async def close(self) -> None:
        await self.producer.stop()


class DirectDestination:
    """Writes each batch as the worker writes a window, on one connection."""

    def __init__(self, sink: SinkConnection) -> None:
        self.sink = sink

    @classmethod
    async def open(cls, settings: Settings) -> DirectDestination:
        conn = await asyncpg.connect(settings.database_url)
        pipeline = settings.pipeline
        return cls(
            SinkConnection(conn, pipeline.retention, selectable_tags=pipeline.selectable_tags)
        )

    async def write(self, batch: CheckedBatch) -> None:
        decoded = batch.decoded
        # An id given twice in one batch is one row, as in a window (workers.stream.window).
        predictions = {p.prediction_id.int: p for p in reversed(decoded.predictions)}
        feedback = {f.feedback_id.int: f for f in reversed(decoded.feedback)}
        selectors = {s.feedback_id.int: s for s in reversed(decoded.selectors)}
        contents = WindowContents(
            list(predictions.values()),
            list(feedback.values()),
            [],
            {},
            len(predictions) + len(feedback) + len(selectors),
            list(selectors.values()),
        )
        if contents.empty:
            return
        try:
            await self.sink.write(contents, datetime.now(UTC))
        except DATA_ERRORS as exc:
            # The decoder passed these rows, so this is rare (and would be the worker's too):
            # a retry would fail the same way, so say where, and stop.
            lines = f"{batch.accepted[0].line}-{batch.accepted[-1].line}"
            raise ValueError(f"Postgres refused a row of lines {lines}: {exc}") from exc

    async def close(self) -> None:
        # The batches' notes folded into the read model once, at the end, as the worker's
        # applier would after its windows (workers.postgres.read_model_applier).
        try:
            if await apply_read_model(self.sink.conn) >= VACUUM_EVERY_NOTES:
                await vacuum_notes(self.sink.conn)
        finally:
            await self.sink.conn.close()
