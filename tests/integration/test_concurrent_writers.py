"""Two workers write the same window at the same moment: every row is still stored once.

This happens when a partition moves to another worker (a rebalance) while its old owner is still
writing a window: the new owner replays the same records.  The inserts carry no ON CONFLICT
clause (workers/postgres/join_sql.py), so the second writer's insert waits for the first
transaction and then fails with unique_violation; the worker retries the window, and the
retry's look-ups find the committed copies.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ingest.metrics.registry import registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from tests.integration.harness import wait_until
from tests.steps import Collect
from workers.clock import SystemClock
from workers.postgres.sink import PostgresSink, QueueStatistics, SinkConnection
from workers.stream.messages import WrittenWindow
from workers.stream.window import WindowBuffer, WindowContents
from workers.stream.window_writer import Retry, WindowWriter
from workers.telemetry import WorkerTelemetry
from workers.testing import traffic as data

TOPICS = TopicNames("concurrent-test")
REGISTRY = registry_from_mapping({"metrics": {"thumbs": {"type": "boolean"}}})
RETENTION = timedelta(days=90)


def _window(pairs: int) -> WindowContents:
    """``pairs`` predictions, each with one feedback, in one window."""
    now_ms = int(time.time() * 1000)
    messages = []
    for _ in range(pairs):
        pid = str(uuid7(now_ms))
        body: dict[str, Any] = {"prediction_id": pid, "application": "a", "timestamp": now_ms}
        messages.append(data.Message(False, pid.encode(), json.dumps(body).encode()))
        feedback = {
            "feedback_id": str(uuid7(now_ms)),
            "metric": "thumbs",
            "value": True,
            "prediction_id": pid,
            "timestamp": now_ms,
        }
        messages.append(data.Message(True, pid.encode(), json.dumps(feedback).encode()))
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(data.decode(messages, TOPICS, REGISTRY), {("concurrent-test", 0): len(messages)})
    return buffer.drain()


def _writer(database_url: str, telemetry: WorkerTelemetry) -> WindowWriter:
    """A worker's write step, ending in a step that keeps what was written."""
    return WindowWriter(
        PostgresSink(database_url, RETENTION),
        Collect[WrittenWindow](),
        SystemClock(),
        telemetry,
        max_in_flight=1,
        retry=Retry(),
        topics=TOPICS,
    )


async def _blocked_on_a_lock(db: asyncpg.Connection, application_name: str) -> bool:
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND application_name = $1",
        application_name,
    )
    return bool(waiting)


async def test_the_second_writer_of_a_window_retries_and_inserts_nothing_twice(
    database_url: str, db: asyncpg.Connection
) -> None:
    contents = _window(pairs=200)
    # The first writer's whole write is held open in one transaction, so it must not refresh the
    # queue's statistics (ANALYZE, which a worker runs outside the window's transaction).
    first = SinkConnection(
        await asyncpg.connect(database_url), RETENTION, queue=QueueStatistics(changes=0)
    )
    telemetry = WorkerTelemetry()
    second = _writer(database_url + "?application_name=second_writer", telemetry)
    written = second.next_step
    assert isinstance(written, Collect)
    try:
        # The day partitions exist (a worker creates them outside the window's transaction, and
        # an uncommitted one would hold the second writer up for another reason).  Then the first
        # writer writes the window but does not commit yet.
        await first._ensure_partitions(contents)
        transaction = first.conn.transaction()
        await transaction.start()
        outcome_first = await first.write(contents, datetime.now(UTC))
        second.submit(contents)
        racing = asyncio.create_task(second.join(deadline=None))
        await wait_until(
            lambda: _blocked_on_a_lock(db, "second_writer"), within=20, what="a lock wait"
        )
        await transaction.commit()
        async with asyncio.timeout(30):
            await racing
    finally:
        await first.conn.close()
        await second.sink.close()
    outcome_second = written.received[0].outcome

    assert outcome_first.predictions_inserted == 200
    assert outcome_first.resolved["joined"] == 200
    assert outcome_second.predictions_inserted == 0
    assert outcome_second.feedback_inserted == 0
    assert telemetry.windows.labels("retried")._value.get() == 1
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.predictions") == 200
    joined = await db.fetchval("SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'")
    assert joined == 200
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.pending_feedback") == 0
