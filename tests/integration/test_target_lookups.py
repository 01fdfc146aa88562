"""Each window's SQL looks predictions up only by the target kinds its feedback has.

A window of UUIDv7 targets gets one look-up branch, a window that mixes UUIDv7 ids, other UUIDs,
join keys and episodes gets four; whichever the statement, every feedback must find its
prediction, both when it is inserted and when it waits in the queue for a later window.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ingest.metrics.registry import registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.postgres import join_sql
from workers.postgres.sink import SinkConnection
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic as data

TOPICS = TopicNames("lookup-test")
REGISTRY = registry_from_mapping(
    {
        "metrics": {
            "thumbs": {"type": "boolean", "level": "prediction"},
            "solved": {"type": "boolean", "level": "episode"},
        }
    }
)


def _message(feedback: bool, body: dict[str, Any]) -> data.Message:
    return data.Message(feedback, b"k", json.dumps(body).encode())


def _window(messages: list[data.Message], offset: int) -> WindowContents:
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(data.decode(messages, TOPICS, REGISTRY), {("lookup-test", 0): offset})
    return buffer.drain()


def _one_of_each_kind() -> tuple[list[data.Message], list[data.Message]]:
    """Four predictions and one feedback naming each: UUIDv7 id, UUIDv4 id, join key, episode."""
    now_ms = int(time.time() * 1000)
    v7, keyed, in_episode = (str(uuid7(now_ms)) for _ in range(3))
    v4, episode = str(uuid.uuid4()), str(uuid.uuid4())
    predictions = [
        {"prediction_id": v7},
        {"prediction_id": v4},
        {"prediction_id": keyed, "join_key": "order-17"},
        {"prediction_id": in_episode, "episode_id": episode},
    ]
    targets: list[tuple[str, dict[str, Any]]] = [
        ("thumbs", {"prediction_id": v7}),
        ("thumbs", {"prediction_id": v4}),
        ("thumbs", {"join_key": "order-17"}),
        ("solved", {"episode_id": episode}),
    ]
    return (
        [_message(False, {**p, "application": "lookup", "timestamp": now_ms}) for p in predictions],
        [
            _message(
                True,
                {
                    "feedback_id": str(uuid7(now_ms)),
                    "metric": metric,
                    "value": True,
                    "timestamp": now_ms,
                    **target,
                },
            )
            for metric, target in targets
        ],
    )


def test_only_the_needed_look_ups_are_planned() -> None:
    uuid7_only = join_sql.insert_feedback(frozenset({"uuid7_id"}))
    every = join_sql.insert_feedback(frozenset(join_sql.TARGET_LOOKUPS))
    assert "d.key = s.target_join_key" not in uuid7_only
    assert "d.key = s.target_episode_id" not in uuid7_only
    assert "d.key = s.target_join_key" in every
    assert "d.key = s.target_episode_id" in every
    assert join_sql.target_lookup(uuid.uuid4(), None, None) == "other_id"
    assert join_sql.target_lookup(None, None, "order-17") == "join_key"
    assert join_sql.target_lookup(None, None, None) == "episode"


async def test_feedback_of_every_target_kind_joins_in_the_same_window(
    db: asyncpg.Connection,
) -> None:
    predictions, feedback = _one_of_each_kind()
    sink = SinkConnection(db, retention=timedelta(days=90))
    outcome = await sink.write(_window(predictions + feedback, 1), datetime.now(UTC))
    assert outcome.resolved == {"joined": 4}
    statuses = await db.fetch("SELECT target_kind, status, application FROM feedbackflow.feedback")
    assert sorted((r["target_kind"], r["status"]) for r in statuses) == [
        ("episode_id", "joined"),
        ("join_key", "joined"),
        ("prediction_id", "joined"),
        ("prediction_id", "joined"),
    ]
    assert {r["application"] for r in statuses} == {"lookup"}


async def test_queued_feedback_of_every_target_kind_joins_a_later_window(
    db: asyncpg.Connection,
) -> None:
    predictions, feedback = _one_of_each_kind()
    sink = SinkConnection(db, retention=timedelta(days=90))
    first = await sink.write(_window(feedback, 1), datetime.now(UTC))
    assert first.feedback_inserted == 4
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.pending_feedback") == 4

    later = await sink.write(_window(predictions, 2), datetime.now(UTC))
    assert later.resolved == {"joined": 4}
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.pending_feedback") == 0
    assert (
        await db.fetchval(
            "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined' "
            "AND application = 'lookup'"
        )
        == 4
    )


async def test_queued_feedback_of_one_kind_joins_with_a_single_look_up(
    db: asyncpg.Connection,
) -> None:
    predictions, feedback = _one_of_each_kind()
    sink = SinkConnection(db, retention=timedelta(days=90))
    await sink.write(_window(feedback[2:3], 1), datetime.now(UTC))  # the join key only
    later = await sink.write(_window(predictions, 2), datetime.now(UTC))
    assert later.resolved == {"joined": 1}
    joined = await db.fetchrow(
        "SELECT target_kind, status, prediction_id FROM feedbackflow.feedback"
    )
    assert joined is not None
    assert (joined["target_kind"], joined["status"]) == ("join_key", "joined")
    assert joined["prediction_id"] is not None


def _prediction_and_feedback(
    prediction_id: str, join_key: str | None, target_join_key: str, at_ms: int
) -> tuple[data.Message, data.Message]:
    body: dict[str, Any] = {"prediction_id": prediction_id, "application": "lookup"}
    if join_key is not None:
        body["join_key"] = join_key
    feedback = {
        "feedback_id": str(uuid7(at_ms)),
        "metric": "thumbs",
        "value": True,
        "join_key": target_join_key,
        "timestamp": at_ms,
    }
    return _message(False, {**body, "timestamp": at_ms}), _message(True, feedback)


async def test_a_join_key_that_is_a_prediction_id_finds_that_prediction(
    db: asyncpg.Connection,
) -> None:
    # Without a join key of its own a prediction's join key is its id as text; the join key
    # index leaves such keys out (the primary key finds them), in the window and from the queue.
    now_ms = int(time.time() * 1000)
    in_window, queued = str(uuid7(now_ms)), str(uuid.uuid4())
    p1, f1 = _prediction_and_feedback(in_window, None, in_window, now_ms)
    p2, f2 = _prediction_and_feedback(queued, None, queued, now_ms)
    sink = SinkConnection(db, retention=timedelta(days=90))
    first = await sink.write(_window([p1, f1, f2], 1), datetime.now(UTC))
    assert first.resolved == {"joined": 1}
    later = await sink.write(_window([p2], 2), datetime.now(UTC))
    assert later.resolved == {"joined": 1}
    rows = await db.fetch(
        "SELECT target_join_key, prediction_id::text AS found FROM feedbackflow.feedback"
    )
    assert sorted((r["target_join_key"], r["found"]) for r in rows) == sorted(
        [(in_window, in_window), (queued, queued)]
    )
    indexed = await db.fetchval(
        "SELECT count(*) FROM feedbackflow.predictions WHERE join_key <> prediction_id::text"
    )
    assert indexed == 0


async def test_a_join_key_names_its_latest_prediction_whichever_index_finds_it(
    db: asyncpg.Connection,
) -> None:
    # A service may choose another prediction's id as a join key: the latest of the two wins.
    now_ms = int(time.time() * 1000)
    default_key = str(uuid7(now_ms - 60_000))
    older, _ = _prediction_and_feedback(default_key, None, default_key, now_ms - 60_000)
    newer_id = str(uuid7(now_ms))
    newer, feedback = _prediction_and_feedback(newer_id, default_key, default_key, now_ms)
    sink = SinkConnection(db, retention=timedelta(days=90))
    await sink.write(_window([older, newer], 1), datetime.now(UTC))
    await sink.write(_window([feedback], 2), datetime.now(UTC))
    found = await db.fetchval("SELECT prediction_id::text FROM feedbackflow.feedback")
    assert found == newer_id
