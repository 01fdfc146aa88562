"""Times as the window's SQL spells them: ``ingested_at`` is the time the worker read the event,
and ``ts`` the event's own, to the microsecond.

Rows carry times as microseconds since the Unix epoch (integers, not datetimes that asyncpg
would encode for every row), and the window's SQL turns them back into times.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg

from ingest.metrics.registry import registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.postgres.sink import SinkConnection
from workers.stream.decode import Decoder
from workers.stream.window import WindowBuffer
from workers.testing import traffic as data

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
        buffer.add(
            Decoder(registry, TOPICS, timedelta(days=90)).decode(records, read_at),
            {("t", 0): offset + 1},
        )
    contents = buffer.drain()
    await SinkConnection(db, timedelta(days=90)).write(contents, datetime.now(UTC))

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


async def test_event_times_and_feedback_keys_are_stored_as_sent(db: asyncpg.Connection) -> None:
    """Rows carry event times as micros and no feedback join key or target kind: the window's
    SQL spells them.  Stored, they are the times sent (to the microsecond, whatever the offset
    or form) and the target as text."""
    sent_at = datetime.now(UTC).replace(microsecond=654_321) - timedelta(hours=3)
    in_paris = sent_at.astimezone(timezone(timedelta(hours=1))).isoformat()
    v7 = uuid7(int(sent_at.timestamp() * 1000))
    v4, episode = uuid.uuid4(), uuid.uuid4()
    predictions: list[dict[str, Any]] = [
        {"prediction_id": str(v7), "timestamp": in_paris},
        {
            "prediction_id": str(v4),
            "join_key": "order-9",
            "episode_id": str(episode),
            "timestamp": int(sent_at.timestamp() * 1000),
        },
    ]
    feedback: list[dict[str, Any]] = [
        {"metric": "haiku_rating", "prediction_id": str(v7), "timestamp": in_paris},
        {"metric": "haiku_rating", "join_key": "order-9", "timestamp": in_paris},
        {"metric": "task_success", "episode_id": str(episode), "timestamp": in_paris},
    ]
    messages = [
        data.Message(False, b"k", json.dumps({**p, "application": "times"}).encode())
        for p in predictions
    ] + [
        data.Message(
            True, b"k", json.dumps({**f, "feedback_id": str(uuid7()), "value": True}).encode()
        )
        for f in feedback
    ]
    registry = registry_from_mapping(
        {
            "metrics": {
                "haiku_rating": {"type": "boolean"},
                "task_success": {"type": "boolean", "level": "episode"},
            }
        }
    )
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(
        Decoder(registry, TOPICS, timedelta(days=90)).decode(
            data.as_records(messages, TOPICS), datetime.now(UTC)
        ),
        {("t", 0): 1},
    )
    outcome = await SinkConnection(db, timedelta(days=90)).write(buffer.drain(), datetime.now(UTC))
    assert outcome.resolved == {"joined": 3}

    stored_predictions = await db.fetch(
        "SELECT prediction_id, join_key, ts FROM feedbackflow.predictions"
    )
    assert {(r["prediction_id"], r["join_key"], r["ts"]) for r in stored_predictions} == {
        (v7, str(v7), sent_at),
        (v4, "order-9", sent_at.replace(microsecond=654_000)),  # epoch milliseconds
    }
    stored_feedback = await db.fetch(
        "SELECT target_kind, join_key, ts, target_id_time FROM feedbackflow.feedback"
    )
    v7_time = sent_at.replace(microsecond=654_000)  # a UUIDv7 carries milliseconds
    assert {tuple(r) for r in stored_feedback} == {
        ("prediction_id", str(v7), sent_at, v7_time),
        ("join_key", "order-9", sent_at, None),
        ("episode_id", str(episode), sent_at, None),
    }
