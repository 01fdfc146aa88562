"""A day partition whose statistics say it is empty is still reached by index.

Statistics of an empty partition (an ANALYZE before its first row: a DBA's nightly run, a
partition made ahead for an event from tomorrow) told the planner a scan of it was free, so the
look-up for an earlier copy of each staged row scanned it whole, once per row, while the same
statement filled it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.postgres.partitions import PartitionCatalog, partition_name
from workers.postgres.sink import SinkConnection
from workers.stream.window import WindowBuffer
from workers.testing import traffic as data

TOPICS = TopicNames("empty-partitions-test")
EVENTS = 400


async def _sequential_scans(db: asyncpg.Connection, tables: list[str]) -> int:
    await db.execute("SELECT pg_stat_force_next_flush()")
    scans: int = await db.fetchval(
        "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables"
        " WHERE schemaname = 'feedbackflow' AND relname = ANY($1::text[])",
        tables,
    )
    return scans


async def test_look_ups_use_indexes_in_a_partition_analyzed_while_empty(
    db: asyncpg.Connection,
) -> None:
    now = datetime.now(UTC)
    days = {(now + timedelta(days=d)).date() for d in (-1, 0, 1)}
    catalog = PartitionCatalog()
    for table in ("predictions", "feedback"):
        await catalog.ensure(db, table, days)
    await db.execute("ANALYZE feedbackflow.predictions, feedbackflow.feedback")
    partitions = [partition_name(t, d) for t in ("predictions", "feedback") for d in days]

    now_ms = int(now.timestamp() * 1000)
    messages = []
    for _ in range(EVENTS):
        prediction_id = str(uuid7(now_ms))
        body = {"prediction_id": prediction_id, "application": "a", "timestamp": now_ms}
        messages.append(data.Message(False, b"k", json.dumps(body).encode()))
        feedback = {
            "feedback_id": str(uuid7(now_ms)),
            "metric": "haiku_rating",
            "prediction_id": prediction_id,
            "value": True,
            "timestamp": now_ms,
        }
        messages.append(data.Message(True, b"k", json.dumps(feedback).encode()))
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(data.decode(messages, TOPICS, data.registry()), {("t", 0): 1})

    before = await _sequential_scans(db, partitions)
    outcome = await SinkConnection(db, timedelta(days=90)).write(buffer.drain(), now)
    await db.execute("SELECT 1")  # a transaction end: this session's statistics are flushed
    assert outcome.predictions_inserted == EVENTS
    assert outcome.resolved == {"joined": EVENTS}
    # Not one scan per staged row (the bug: 800 here); none at all, in fact.
    assert await _sequential_scans(db, partitions) - before == 0
