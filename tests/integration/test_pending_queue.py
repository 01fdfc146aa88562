"""The pending queue against a real Postgres: a large queue is looked up by index, not read whole.

When the queue outnumbers a window's predictions (a backfill of early feedback), the sink gathers
the queued feedback the window resolves by index look-ups per prediction (O(window)) instead of
letting the planner hash the whole queue (O(pending)).  Both paths must resolve the same rows.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.topics import TopicNames
from workers.postgres.sink import QUEUE_STATS_MIN_CHANGES, SinkConnection
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic as data

TOPICS = TopicNames("queue-test")


def _window(messages: list[data.Message], offset: int) -> WindowContents:
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(data.decode(messages, TOPICS, data.registry()), {("queue-test", 0): offset})
    return buffer.drain()


async def _index_scans(db: asyncpg.Connection) -> int:
    scans: int = await db.fetchval(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1",
        "pending_feedback_prediction",
    )
    return scans


async def _queued(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM feedbackflow.pending_feedback")
    return count


async def test_a_queue_larger_than_the_window_is_probed_by_index_and_resolves_the_same(
    db: asyncpg.Connection,
) -> None:
    rng = random.Random(3)
    now_ms = int(time.time() * 1000)
    predictions = [data.prediction_payload(rng, now_ms) for _ in range(QUEUE_STATS_MIN_CHANGES)]
    early = [
        data.Message(True, pid.encode(), data.feedback_payload(rng, pid, now_ms))
        for pid, _ in predictions
    ]
    sink = SinkConnection(db, retention=timedelta(days=90))

    first = await sink.write(_window(early, 1), datetime.now(UTC))
    assert first.feedback_inserted == len(predictions)
    assert await _queued(db) == len(predictions)

    # One prediction against a queue of 1,000: the look-up goes through the queue's index.
    await db.execute("SELECT pg_stat_force_next_flush()")
    scans_before = await _index_scans(db)
    pid, value = predictions[0]
    one = await sink.write(
        _window([data.Message(False, pid.encode(), value)], 2), datetime.now(UTC)
    )
    await db.execute("SELECT pg_stat_force_next_flush()")
    await db.execute("SELECT 1")  # a transaction end, which flushes this session's statistics
    assert one.resolved == {"joined": 1}
    assert await _queued(db) == len(predictions) - 1
    assert await _index_scans(db) > scans_before
    status = await db.fetchval(
        "SELECT status FROM feedbackflow.feedback WHERE target_prediction_id = $1",
        uuid.UUID(pid),
    )
    assert status == "joined"

    # The rest in one window, as many predictions as queued feedback: planned freely.
    rest = [data.Message(False, p.encode(), v) for p, v in predictions[1:]]
    outcome = await sink.write(_window(rest, 3), datetime.now(UTC))
    assert outcome.resolved == {"joined": len(predictions) - 1}
    assert await _queued(db) == 0
    assert await db.fetchval(
        "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'"
    ) == len(predictions)
    # Planning freely again: the session's join methods were restored after the probe.
    assert await db.fetchval("SHOW enable_hashjoin") == "on"
