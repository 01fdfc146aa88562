"""A crash after the Postgres commit and before the Kafka commit: the replay inserts nothing.

The worker dies where it can do the most harm, with a window in Postgres and its offsets not
committed (the fake consumer's commit stands for the SIGKILL).  The next worker reads the same
records from the last committed offset and writes every window again; the sink's id look-ups
make that a no-op for what was stored, and nothing is lost or stored twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import timedelta

import asyncpg
import pytest

from tests.fakes import TOPICS, FakeConsumer, ProcessDied, loop_over, run_until_all_committed
from workers.postgres.sink import PostgresSink
from workers.telemetry import WorkerTelemetry
from workers.testing.traffic import Record, prediction_payload

RETENTION = timedelta(days=90)
PER_WINDOW = 100


def _batches(windows: int) -> list[list[Record]]:
    """Each window: predictions, then a batch of feedback for them."""
    rng, now_ms = random.Random(5), int(time.time() * 1000)
    batches, offset = [], 0
    for w in range(windows):
        predictions, feedback = [], []
        for i in range(PER_WINDOW // 2):
            pid, value = prediction_payload(rng, now_ms)
            predictions.append(Record(TOPICS.predictions, 0, offset + i, now_ms, None, value))
            body: dict[str, object] = {"feedback_id": f"00000000-0000-4000-8000-{w:06d}{i:06d}"}
            body |= {"metric": "thumbs"}
            body |= {"prediction_id": pid, "value": True}
            payload = json.dumps(body).encode()
            feedback.append(Record(TOPICS.feedback, 0, offset + i, now_ms, None, payload))
        offset += PER_WINDOW // 2
        batches += [predictions, feedback]
    return batches


async def _stored(db: asyncpg.Connection) -> tuple[int, int, int]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM feedbackflow.predictions) AS p,"
        " (SELECT count(*) FROM feedbackflow.feedback) AS f,"
        " (SELECT count(DISTINCT feedback_id) FROM feedbackflow.feedback) AS d"
    )
    assert row is not None
    return row["p"], row["f"], row["d"]


async def test_a_crash_between_the_two_commits_replays_as_a_no_op(
    database_url: str, db: asyncpg.Connection
) -> None:
    batches = _batches(windows=3)
    crashing = FakeConsumer(batches, crash_on_commit=True)
    sink = PostgresSink(database_url, RETENTION)
    # One window in flight: the crash leaves exactly the first window in Postgres.
    loop = loop_over(crashing, sink, in_flight=1, per_window=PER_WINDOW)
    try:
        with pytest.raises(ProcessDied):
            await loop.run(asyncio.Event())
    finally:
        await sink.close()
    before = await _stored(db)
    assert before == (PER_WINDOW // 2, PER_WINDOW // 2, PER_WINDOW // 2)  # a window was stored

    assert crashing.commits == []  # ... and none of its offsets in Kafka

    replaying = FakeConsumer(batches)  # from the last committed offset: the start
    telemetry = WorkerTelemetry()
    sink = PostgresSink(database_url, RETENTION)
    try:
        loop = loop_over(replaying, sink, per_window=PER_WINDOW, telemetry=telemetry)
        await run_until_all_committed(loop, replaying)
    finally:
        await sink.close()

    total = 3 * PER_WINDOW // 2
    assert await _stored(db) == (total, total, total)
    # The replay inserted only what the crash had not stored.
    assert telemetry.predictions_written._value.get() == total - before[0]
    assert telemetry.feedback_written._value.get() == total - before[1]
