"""``ingested_at`` is the time the worker read the event, to the microsecond.

Rows carry it as microseconds since the Unix epoch (one integer per batch, not a datetime that
asyncpg would encode for every row), and the window's SQL turns it back into a time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import asyncpg

from bench import data
from ingest.topics import TopicNames
from workers.decode import Decoder
from workers.postgres_sink import PostgresSink
from workers.window import WindowBuffer

TOPICS = TopicNames("read-time-test")


async def test_predictions_and_feedback_keep_the_exact_time_their_batch_was_read(
    db: asyncpg.Connection,
) -> None:
    events = data.generate(40, seed=3)
    registry = data.registry()
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    now = datetime.now(UTC)
    read_times = [
        now.replace(microsecond=123_457),
        (now + timedelta(minutes=1)).replace(microsecond=999_999),
    ]
    halves = (events.messages[:20], events.messages[20:])
    for offset, (messages, read_at) in enumerate(zip(halves, read_times, strict=True)):
        records = data.as_records(messages, TOPICS)
        buffer.add(Decoder(registry, TOPICS).decode(records, read_at), {("t", 0): offset + 1})
    contents = buffer.drain()
    await PostgresSink(db, timedelta(days=90)).write(contents, datetime.now(UTC))

    await db.execute("SET TIME ZONE 'Europe/Berlin'")  # the session's zone changes nothing
    stored = await db.fetch(
        "SELECT ingested_at, count(*) FROM ("
        " SELECT ingested_at FROM feedbackflow.predictions"
        " UNION ALL SELECT ingested_at FROM feedbackflow.feedback) t GROUP BY 1 ORDER BY 1"
    )
    assert [(r["ingested_at"], r["count"]) for r in stored] == [
        (min(read_times), 20),
        (max(read_times), 20),
    ]
