"""The key directory (feedbackflow.prediction_keys, workers.postgres.key_directory).

Feedback that names a prediction by anything but a UUIDv7 id is looked up in the directory, not
in the day partitions of predictions: so the directory must hold a prediction's keys exactly
when the prediction is stored (written in its window, not again on a replay, gone when retention
drops its day), and every target kind must join through it with the join's semantics (a join
key names its latest prediction, an episode its first, a default join key is the id as text).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ingest.metrics.registry import registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.postgres import join_sql
from workers.postgres.migrate import available_migrations
from workers.postgres.partitions import PartitionCatalog
from workers.postgres.retention import apply_retention
from workers.postgres.sink import SinkConnection
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic as data

TOPICS = TopicNames("key-directory-test")
REGISTRY = registry_from_mapping(
    {
        "metrics": {
            "thumbs": {"type": "boolean", "level": "prediction"},
            "solved": {"type": "boolean", "level": "episode"},
        }
    }
)
HOUR_MS = 3_600_000
RETENTION = timedelta(days=90)


def _window(bodies: list[tuple[bool, dict[str, Any]]], offset: int) -> WindowContents:
    messages = [data.Message(fb, b"k", json.dumps(body).encode()) for fb, body in bodies]
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(data.decode(messages, TOPICS, REGISTRY), {("key-directory-test", 0): offset})
    return buffer.drain()


def _prediction(prediction_id: str, at_ms: int, **keys: str) -> tuple[bool, dict[str, Any]]:
    return False, {
        "prediction_id": prediction_id,
        "application": "keys",
        "model": f"model-{prediction_id[:8]}",
        "timestamp": at_ms,
        **keys,
    }


def _feedback(metric: str, at_ms: int, **target: str) -> tuple[bool, dict[str, Any]]:
    body = {"feedback_id": str(uuid7(at_ms)), "metric": metric, "value": True, "timestamp": at_ms}
    return True, {**body, **target}


class Story:
    """Predictions of every key shape, and one feedback per way of naming them."""

    def __init__(self) -> None:
        now_ms = int(time.time() * 1000)
        self.now_ms = now_ms
        early, late = now_ms - 3 * HOUR_MS, now_ms - HOUR_MS
        self.v7 = str(uuid7(early))
        self.v4 = str(uuid.uuid4())
        self.v4_keyed = str(uuid.uuid4())
        self.v7_keyed_first, self.v7_keyed_latest = str(uuid7(early)), str(uuid7(late))
        self.first_of_episode, self.later_of_episode = str(uuid7(early)), str(uuid7(late))
        self.episode = str(uuid.uuid4())
        self.predictions = [
            _prediction(self.v7, early),
            _prediction(self.v4, early),
            _prediction(self.v4_keyed, early, join_key="order-17"),
            _prediction(self.v7_keyed_first, early, join_key="session-9"),
            _prediction(self.v7_keyed_latest, late, join_key="session-9"),
            _prediction(self.first_of_episode, early, episode_id=self.episode),
            _prediction(self.later_of_episode, late, episode_id=self.episode),
        ]
        # feedback -> the prediction id it must join (None: an episode's feedback names none)
        # and the time of the prediction it joins.
        self.expected: dict[str, tuple[str | None, int]] = {}
        self.feedback: list[tuple[bool, dict[str, Any]]] = []
        for target, joins, at in (
            ({"prediction_id": self.v4}, self.v4, early),
            ({"prediction_id": self.v4_keyed}, self.v4_keyed, early),
            ({"join_key": self.v4}, self.v4, early),  # default join key of a UUIDv4
            ({"join_key": self.v7}, self.v7, early),  # default join key of a UUIDv7
            ({"join_key": "order-17"}, self.v4_keyed, early),
            ({"join_key": "session-9"}, self.v7_keyed_latest, late),
        ):
            fb = _feedback("thumbs", now_ms, **target)
            self.feedback.append(fb)
            self.expected[fb[1]["feedback_id"]] = (joins, at)
        fb = _feedback("solved", now_ms, episode_id=self.episode)
        self.feedback.append(fb)
        self.expected[fb[1]["feedback_id"]] = (None, early)
        # A chosen join key replaces the default: the id as text names nothing.
        self.unnamed = _feedback("thumbs", now_ms, join_key=self.v4_keyed)


async def _directory(db: asyncpg.Connection) -> set[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT kind::text, key, prediction_id::text FROM feedbackflow.prediction_keys"
    )
    return {(r["kind"], r["key"], r["prediction_id"]) for r in rows}


async def _joined(db: asyncpg.Connection) -> dict[str, tuple[str | None, int]]:
    rows = await db.fetch(
        "SELECT feedback_id::text, prediction_id::text, prediction_ts FROM feedbackflow.feedback"
        " WHERE status = 'joined'"
    )
    return {
        r["feedback_id"]: (r["prediction_id"], int(r["prediction_ts"].timestamp() * 1000))
        for r in rows
    }


async def test_the_directory_holds_each_stored_prediction_s_keys_once(
    db: asyncpg.Connection,
) -> None:
    story = Story()
    sink = SinkConnection(db, retention=RETENTION)
    outcome = await sink.write(_window(story.predictions, 1), datetime.now(UTC))
    assert outcome.predictions_inserted == len(story.predictions)
    # A UUIDv7 whose join key is its id is found by the time the id carries: no row.
    expected = {
        ("k", story.v4, story.v4),  # also how the UUIDv4 is found by id
        ("k", "order-17", story.v4_keyed),
        ("i", story.v4_keyed, story.v4_keyed),  # its id is neither its join key nor a UUIDv7
        ("k", "session-9", story.v7_keyed_first),
        ("k", "session-9", story.v7_keyed_latest),
        ("e", story.episode, story.first_of_episode),
        ("e", story.episode, story.later_of_episode),
    }
    assert await _directory(db) == expected
    # A replay stores no prediction again, and no key either.
    replay = await sink.write(_window(story.predictions, 1), datetime.now(UTC))
    assert replay.predictions_inserted == 0
    count = await db.fetchval("SELECT count(*) FROM feedbackflow.prediction_keys")
    assert count == len(expected)
    # A copy a minute later is a copy (not stored): the directory keeps the stored row's time.
    _, body = story.predictions[2]
    moved = await sink.write(
        _window([(False, {**body, "timestamp": body["timestamp"] + 60_000})], 2), datetime.now(UTC)
    )
    assert moved.predictions_inserted == 0
    times = await db.fetch(
        "SELECT DISTINCT ts FROM feedbackflow.prediction_keys WHERE prediction_id = $1",
        uuid.UUID(story.v4_keyed),
    )
    assert [int(r["ts"].timestamp() * 1000) for r in times] == [body["timestamp"]]


async def test_the_migration_fills_the_directory_as_the_window_does(
    db: asyncpg.Connection,
) -> None:
    """Predictions stored before migration 0007 get the same keys as those written after."""
    story = Story()
    await SinkConnection(db, retention=RETENTION).write(
        _window(story.predictions, 1), datetime.now(UTC)
    )
    written = await _directory(db)
    (migration,) = [m for m in available_migrations() if m.version == 7]
    backfill = migration.sql.split("-- The predictions stored before this migration")[1]
    await db.execute("DELETE FROM feedbackflow.prediction_keys")
    await db.execute(backfill.split("\n", 1)[1])
    assert await _directory(db) == written


@pytest.mark.parametrize("queued_half", [0, 1])
async def test_every_target_kind_joins_through_the_directory_in_its_window_and_from_the_queue(
    db: asyncpg.Connection, queued_half: int
) -> None:
    story = Story()
    sink = SinkConnection(db, retention=RETENTION)
    # Half the feedback first, queued; then the predictions with the other half (each kind is
    # queued in one of the two runs, and new in the other).
    queued = story.feedback[queued_half::2]
    fresh = story.feedback[1 - queued_half :: 2]
    first = await sink.write(_window([*queued, story.unnamed], 1), datetime.now(UTC))
    assert first.feedback_queued == len(queued) + 1
    later = await sink.write(_window(story.predictions + fresh, 2), datetime.now(UTC))
    assert later.resolved == {"joined": len(story.feedback)}
    assert await _joined(db) == story.expected
    pending = await db.fetchval("SELECT target_join_key FROM feedbackflow.pending_feedback")
    assert pending == story.v4_keyed


async def test_the_look_ups_read_the_directory_not_the_predictions(
    db: asyncpg.Connection,
) -> None:
    story = Story()
    sink = SinkConnection(db, retention=RETENTION)
    await sink.write(_window(story.predictions, 1), datetime.now(UTC))
    await db.execute("DELETE FROM feedbackflow.prediction_keys")
    outcome = await sink.write(_window(story.feedback, 2), datetime.now(UTC))
    # Only the default join key of a UUIDv7 is found without it: by the time the id carries.
    assert outcome.resolved == {"joined": 1}
    assert outcome.feedback_queued == len(story.feedback) - 1


async def test_retention_drops_the_keys_of_the_days_it_drops(db: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    old_ms = now_ms - 5 * 24 * HOUR_MS
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    sink = SinkConnection(db, retention=RETENTION)
    window = [
        _prediction(old, old_ms, join_key="trace-old", episode_id=str(uuid.uuid4())),
        _prediction(recent, now_ms, join_key="trace-recent"),
    ]
    await sink.write(_window(window, 1), now)
    assert len(await _directory(db)) == 5

    result = await apply_retention(db, timedelta(days=2), now)
    assert any(name.startswith("predictions_") for name in result.dropped)
    assert await _directory(db) == {("k", "trace-recent", recent), ("i", recent, recent)}
    # Feedback naming the dropped prediction finds nothing, as if the directory were not there.
    outcome = await SinkConnection(db, retention=timedelta(days=2)).write(
        _window([_feedback("thumbs", now_ms, join_key="trace-old")], 2), now
    )
    assert outcome.feedback_queued == 1


async def test_a_window_s_look_ups_by_other_targets_touch_no_day_partition(
    db: asyncpg.Connection,
) -> None:
    """The plan of a window's statements, with 40 day partitions of predictions: feedback by
    other ids, join keys and episodes reaches no partition of predictions, while a UUIDv7
    target reaches only the days around the time it carries."""
    now = datetime.now(UTC)
    days = {(now - timedelta(days=d)).date() for d in range(40)}
    catalog = PartitionCatalog()
    for table in ("predictions", "feedback"):
        await catalog.ensure(db, table, days)
    await db.execute(join_sql.CREATE_STAGING)
    day = timedelta(days=1)
    others = frozenset({"other_id", "join_key", "episode"})
    async with db.transaction():
        new_plan = await db.fetch(
            "EXPLAIN " + join_sql.insert_feedback(others), now - day, now + day, RETENTION, now
        )
        queued_plan = await db.fetch(
            "EXPLAIN " + join_sql.resolve_queued(others), RETENTION, now, now - day, now
        )
        uuid7_plan = await db.fetch(
            "EXPLAIN " + join_sql.insert_feedback(frozenset({"uuid7_id"})),
            *(now - day, now + day, RETENTION, now, now - day, now),
        )
        uuid7_key_plan = await db.fetch(
            "EXPLAIN " + join_sql.insert_feedback(frozenset({"join_key", "uuid7_key"})),
            *(now - day, now + day, RETENTION, now, now - day, now),
        )

    def partitions(plan: list[asyncpg.Record]) -> int:
        return sum("predictions_p" in row[0] for row in plan)

    def directory(plan: list[asyncpg.Record]) -> bool:
        return any("prediction_keys" in row[0] for row in plan)

    assert partitions(new_plan) == 0
    assert directory(new_plan)
    assert partitions(queued_plan) == 0
    assert directory(queued_plan)
    assert 1 <= partitions(uuid7_plan) <= 3
    assert 1 <= partitions(uuid7_key_plan) <= 3
    assert directory(uuid7_key_plan)


def test_a_join_key_that_spells_a_uuid7_is_also_looked_up_by_its_time() -> None:
    at_ms = int(time.time() * 1000)
    key = str(uuid7(at_ms))[:24] + "abcdef012345"  # letters, for the upper-case spelling
    assert join_sql.join_key_time(key) == at_ms * 1000
    assert join_sql.target_lookup(None, None, key) == "uuid7_key"
    # Not as uuid::text spells it: it cannot be a default join key.
    for other in (key.upper(), key.replace("-", ""), str(uuid.uuid4()), "tr-" + "a" * 32):
        assert join_sql.join_key_time(other) is None
        assert join_sql.target_lookup(None, None, other) == "join_key"
