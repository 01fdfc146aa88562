"""Feedback aimed at predictions by their tags: resolved in the window's transaction into one
joined feedback per matched prediction (stored ones and the window's own), pending while nothing
matches, joined by a later window's prediction, expired past the retention; a replay adds
nothing; only selectable tag keys are indexed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import asyncpg

from ingest.metrics.registry import registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from tests.integration.read_model_checks import read_model_state, rebuilt_state
from workers.postgres.read_model_applier import apply_read_model
from workers.postgres.sink import SinkConnection
from workers.read_model.queries import Selection, feedback_volume
from workers.stream.decode import Decoder
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing.traffic import Record

TOPICS = TopicNames("selector-test")
REGISTRY = registry_from_mapping({"metrics": {"helpful": {"type": "boolean"}}})
SELECTABLE = ("session",)
RETENTION = timedelta(days=90)
NOW = datetime.now(UTC).replace(microsecond=0)
_offsets = count()


def prediction(tags: dict[str, str], at: datetime = NOW) -> tuple[bool, dict[str, Any]]:
    millis = int(at.timestamp() * 1000)
    return False, {
        "prediction_id": str(uuid7(millis)),
        "application": "chat",
        "tags": tags,
        "timestamp": millis,
    }


def selector(items: list[str], value: bool = True, at: datetime = NOW) -> tuple[bool, Any]:
    millis = int(at.timestamp() * 1000)
    return True, {
        "feedback_id": str(uuid7(millis)),
        "metric": "helpful",
        "tag_selector": items,
        "value": value,
        "source": {"type": "human", "id": "ana"},
        "timestamp": millis,
    }


def window(*events: tuple[bool, dict[str, Any]], at: datetime = NOW) -> WindowContents:
    decoder = Decoder(REGISTRY, TOPICS, RETENTION, SELECTABLE)
    records = [
        Record(
            TOPICS.feedback if is_feedback else TOPICS.predictions,
            0,
            next(_offsets),
            int(at.timestamp() * 1000),
            b"k",
            json.dumps(body).encode(),
        )
        for is_feedback, body in events
    ]
    batch = decoder.decode(records, at)
    assert batch.dead_letters == [], batch.dead_letters
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(batch, {("t", 0): len(records)})
    return buffer.drain()


async def selectors(db: asyncpg.Connection) -> dict[str, tuple[str, int]]:
    rows = await db.fetch(
        "SELECT array_to_string(selector, ',') AS s, status,"
        " cardinality(matched_prediction_ids) AS n FROM feedbackflow.selector_feedback"
    )
    return {r["s"]: (r["status"], r["n"]) for r in rows}


async def test_a_selector_joins_every_stored_and_same_window_prediction_carrying_its_tags(
    db: asyncpg.Connection,
) -> None:
    sink = SinkConnection(db, RETENTION, selectable_tags=SELECTABLE)
    earlier = NOW - timedelta(days=3)
    first, second, other, untagged = (
        prediction({"session": "s1", "env": "prod"}, earlier),
        prediction({"session": "s1"}),
        prediction({"session": "s2", "env": "prod"}, earlier),
        prediction({}, earlier),
    )
    await sink.write(window(first, other, untagged, at=earlier), earlier)
    same_window = prediction({"session": "s1", "env": "prod"})
    contents = window(
        second,
        same_window,
        selector(["session=s1"]),
        selector(["session=s1", "env=prod"], value=False),
    )
    outcome = await sink.write(contents, NOW)
    replayed = await sink.write(contents, NOW)

    assert outcome.feedback_inserted == 3 + 2
    assert replayed.feedback_inserted == 0
    assert await selectors(db) == {
        "session=s1": ("joined", 3),
        "env=prod,session=s1": ("joined", 2),
    }
    joined = await db.fetch(
        "SELECT prediction_id::text AS p, value_bool, status FROM feedbackflow.feedback"
        " ORDER BY value_bool, prediction_ts, prediction_id"
    )
    ids = {p[1]["prediction_id"] for p in (first, second, same_window)}
    assert {r["p"] for r in joined if r["value_bool"]} == ids
    both = {first[1]["prediction_id"], same_window[1]["prediction_id"]}
    assert {r["p"] for r in joined if not r["value_bool"]} == both
    assert {r["status"] for r in joined} == {"joined"}
    # Only the selectable key is indexed: 'session' and 'session=...', never 'env'.
    tags = await db.fetch("SELECT DISTINCT tag FROM feedbackflow.prediction_tags ORDER BY tag")
    assert [r["tag"] for r in tags] == ["session", "session=s1", "session=s2"]
    # The read model: ana's two selectors on the same two predictions revise each other (same
    # time, the larger feedback id wins), so three current values, as a rebuild finds too
    # (folded in as the worker's applier does after a window).
    await apply_read_model(db)
    assert await read_model_state(db) == await rebuilt_state(db)
    hour = NOW.replace(minute=0, second=0)
    [volume] = await feedback_volume(db, Selection(hour, hour + timedelta(hours=1), grain="1h"))
    assert (volume.metric, volume.feedback_count, volume.joined_count) == ("helpful", 3, 3)


async def test_a_selector_waits_pending_for_its_prediction_and_expires_past_retention(
    db: asyncpg.Connection,
) -> None:
    sink = SinkConnection(db, RETENTION, selectable_tags=SELECTABLE)
    await sink.write(window(selector(["session=s4"]), selector(["session=never"])), NOW)
    assert await selectors(db) == {"session=s4": ("pending", 0), "session=never": ("pending", 0)}

    later = NOW + timedelta(minutes=5)
    arriving = prediction({"session": "s4"}, later)
    outcome = await sink.write(window(arriving, at=later), later)
    assert outcome.feedback_inserted == 1
    assert await selectors(db) == {"session=s4": ("joined", 1), "session=never": ("pending", 0)}
    joined = await db.fetchval("SELECT prediction_id::text FROM feedbackflow.feedback")
    assert joined == arriving[1]["prediction_id"]

    past = NOW + RETENTION + timedelta(days=1)
    await sink.write(window(prediction({"session": "late"}, past), at=past), past)
    assert await selectors(db) == {"session=s4": ("joined", 1), "session=never": ("expired", 0)}
