"""Where checked rows go: Kafka (the default, through the SDK's producer) or, with
``--direct``, Postgres through the worker's own sink (``workers.postgres.sink``): the same
transaction per batch, the same join SQL, the same statuses as a window of the worker.

``write`` returns once the batch is durable (acked by the broker with acks=all, or committed):
only then may the checkpoint move past it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from ingest.backfill.checking import CheckedBatch
from ingest.sdk.producer import FeedbackflowProducer
from ingest.topics import TopicNames
from workers.postgres.sink import DATA_ERRORS, SinkConnection
from workers.settings import Settings
from workers.stream.window import WindowContents


class Destination(Protocol):
    async def write(self, batch: CheckedBatch) -> None: ...
    async def close(self) -> None: ...


class KafkaDestination:
    """Publishes the rows' bytes as they were checked, keyed by join key like the SDK."""

    def __init__(self, producer: FeedbackflowProducer) -> None:
        self.producer = producer

    @classmethod
    async def open(cls, settings: Settings) -> KafkaDestination:
        producer = FeedbackflowProducer(
            settings.kafka_bootstrap,
            topics=TopicNames(settings.topic_prefix),
            idempotent=settings.kafka_idempotence,
            # Whole batches are flushed at once: larger produce requests, fewer round trips.
            linger_ms=20,
        )
        await producer.start()
        return cls(producer)

    async def write(self, batch: CheckedBatch) -> None:
        send = self.producer.send_raw
        for row in batch.accepted:
            await send(row.topic, row.key, row.value)  # enqueues; no round trip per row
        await self.producer.flush()

    async def close(self) -> None:
        await self.producer.close()


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
        await self.sink.conn.close()
