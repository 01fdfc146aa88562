"""The join, end to end: SDK → tansu → worker → PostgreSQL, asserting exact rows."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from ingest.sdk.producer import build_feedback
from tests.integration.harness import (
    LivePipeline,
    count,
    live_pipeline,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker


async def test_feedback_in_the_same_window_as_its_prediction_is_joined(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        prediction = await live.ff.log_prediction(
            application="generate_haiku",
            model="gpt-a",
            inputs={"topic": "rain"},
            outputs={"haiku": "..."},
        )
        await live.ff.log_feedback(
            metric="haiku_rating",
            prediction_id=prediction.prediction_id,
            value=True,
            source={"type": "end_user", "id": "u1"},
        )
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
    row = await db.fetchrow("SELECT * FROM feedbackflow.feedback")
    assert row is not None
    assert row["prediction_id"] == prediction.prediction_id
    assert (row["application"], row["model"], row["value_bool"]) == (
        "generate_haiku",
        "gpt-a",
        True,
    )
    assert row["source_type"] == "end_user"
    assert row["delay_seconds"] >= 0
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 1


async def test_feedback_before_its_prediction_waits_pending_then_joins(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        feedback = await live.ff.log_feedback(metric="haiku_score", join_key="req-42", value=4.5)
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'pending'", 1
        )
        assert await count(db, "SELECT count(*) FROM feedbackflow.pending_feedback") == 1
        # The window that stored it pending has committed: the prediction comes in a later one.
        await live.ff.log_prediction(application="generate_haiku", model="gpt-b", join_key="req-42")
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
    row = await db.fetchrow("SELECT * FROM feedbackflow.feedback")
    assert row is not None
    assert row["feedback_id"] == feedback.feedback_id
    assert await count(db, "SELECT count(*) FROM feedbackflow.pending_feedback") == 0
    assert (row["model"], row["value_float"]) == ("gpt-b", 4.5)


async def test_feedback_in_a_later_window_than_its_prediction_is_joined(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        prediction = await live.ff.log_prediction(application="generate_haiku", model="gpt-a")
        await live.ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 1)
        await live.ff.log_feedback(
            metric="tone", prediction_id=prediction.prediction_id, value="casual"
        )
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
    row = await db.fetchrow("SELECT value_text, model, delay_seconds FROM feedbackflow.feedback")
    assert row is not None
    assert (row["value_text"], row["model"]) == ("casual", "gpt-a")
    assert row["delay_seconds"] > 0


async def test_the_same_feedback_sent_three_times_is_stored_once(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    """Twice in one window (the window keeps one), then again two windows later: the worker
    keeps only the ids of the one window before in memory, so only Postgres's id look-up can
    tell the third copy is one it has."""
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        prediction = await live.ff.log_prediction(application="generate_haiku")
        feedback = build_feedback(
            live.registry,
            metric="haiku_rating",
            prediction_id=prediction.prediction_id,
            value=False,
        )
        raw = feedback.model_dump_json().encode()
        await live.ff.send_raw(live.topics.feedback, feedback.target, raw)
        await live.ff.send_raw(live.topics.feedback, feedback.target, raw)  # same window
        await live.ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.feedback", 1)
        await _a_window_later(live, db)  # the window that stored it is no longer "before"
        await live.ff.send_raw(live.topics.feedback, feedback.target, raw)
        await _a_window_later(live, db)  # and the third copy has been read and written
        consumed = live.worker.telemetry.events_consumed.labels(live.topics.feedback)._value.get()
    assert consumed == 3
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 1
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback WHERE status='joined'") == 1


async def _a_window_later(live: LivePipeline, db: asyncpg.Connection) -> None:
    """Send a marker prediction and wait until it is stored.  The window it was read into has
    then been closed, and it was closed after everything stored before the marker was sent:
    whatever is sent next lands in a window that has a window between it and those."""
    marker = await live.ff.log_prediction(application="marker", join_key="marker")
    await live.ff.flush()
    await wait_for_count(
        db,
        "SELECT count(*) FROM feedbackflow.predictions WHERE prediction_id = $1",
        1,
        marker.prediction_id,
    )


async def test_malformed_messages_become_dead_letters_and_the_partition_keeps_flowing(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    bad = {
        b'{"feedback_id": "oops': ("(payload)", "invalid JSON"),
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000001", "metric": "vibes",'
        b' "join_key": "k", "value": true}': ("metric", "unknown metric 'vibes'"),
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000002", "metric": "haiku_score",'
        b' "join_key": "k", "value": "five"}': ("value", "is a number; got a string"),
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000003", "metric": "task_success",'
        b' "join_key": "k", "value": true}': ("join_key", "episode-level"),
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000004", "metric": "haiku_rating",'
        b' "value": true}': ("(event)", "exactly one of prediction_id, join_key, episode_id"),
        # Valid JSON that Postgres cannot store: it must not fail the window it is in.
        b'{"feedback_id": "0196b0f6-0000-7000-8000-000000000005", "metric": "haiku_rating",'
        b' "join_key": "k", "value": true, "rationale": "a\\u0000b"}': ("rationale", "NUL"),
    }
    async with live_pipeline(kafka.bootstrap, database_url, partitions=1) as live:
        for raw in bad:
            await live.ff.send_raw(live.topics.feedback, b"k", raw)
        good = await live.ff.log_feedback(metric="haiku_rating", join_key="k", value=True)
        await live.ff.log_prediction(application="generate_haiku", join_key="k")
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.dead_letters", len(bad))

        async def counted() -> bool:  # counters move after the offset commit, just after the rows
            total = sum(
                sample.value
                for metric in live.worker.telemetry.dead_letters.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
            )
            return total == len(bad)

        await wait_until(counted, within=10, what=f"the dead-letter counter to reach {len(bad)}")
    rows = await db.fetch("SELECT payload, error_field, reason FROM feedbackflow.dead_letters")
    assert len(rows) == len(bad)
    for row in rows:
        field, reason = bad[bytes(row["payload"])]
        assert row["error_field"] == field
        assert reason in row["reason"]
    stored = await db.fetchval("SELECT feedback_id FROM feedbackflow.feedback")
    assert stored == good.feedback_id
    mirrored = await _read_topic(live.settings.kafka_bootstrap, live.topics.dead_letter, len(bad))
    assert sorted(m.value for m in mirrored) == sorted(bad)
    for message in mirrored:
        headers = dict(message.headers)
        assert headers["feedbackflow-error-field"].decode() == bad[message.value][0]


async def _read_topic(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(part)
    finally:
        await consumer.stop()
    return found


async def test_episode_feedback_joins_every_prediction_of_the_episode(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    episode = uuid.uuid4()
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        feedback = await live.ff.log_feedback(metric="task_success", episode_id=episode, value=True)
        for step in range(3):
            await live.ff.log_prediction(
                application="agent_step",
                model="gpt-a",
                episode_id=episode,
                inputs={"step": step},
            )
        await live.ff.log_prediction(application="agent_step", model="gpt-a")  # another episode
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 4)
    linked = await db.fetch(
        "SELECT prediction_id FROM feedbackflow.episode_feedback_predictions "
        "WHERE feedback_id = $1",
        feedback.feedback_id,
    )
    assert len(linked) == 3
    row = await db.fetchrow("SELECT application, target_kind FROM feedbackflow.feedback")
    assert row is not None
    assert (row["application"], row["target_kind"]) == ("agent_step", "episode_id")


async def test_two_sources_are_kept_side_by_side_and_a_revision_supersedes_by_timestamp(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    t0 = datetime.now(UTC) - timedelta(hours=1)
    alice = {"type": "human", "id": "alice"}
    judge = {"type": "llm_judge", "id": "judge-v1"}
    async with live_pipeline(kafka.bootstrap, database_url, partitions=1) as live:
        prediction = await live.ff.log_prediction(application="generate_haiku", model="gpt-a")
        target: dict[str, Any] = {"prediction_id": prediction.prediction_id}
        score = "haiku_score"
        await live.ff.log_feedback(metric=score, **target, value=2.0, source=alice, timestamp=t0)
        await live.ff.log_feedback(
            metric=score,
            **target,
            value=4.0,
            source=judge,
            timestamp=t0,
            rationale="vivid imagery, correct 5-7-5",
        )
        revision = await live.ff.log_feedback(
            metric=score, **target, value=3.0, source=alice, timestamp=t0 + timedelta(minutes=10)
        )
        # Arrives last but was given before the revision: it must not win.
        await live.ff.log_feedback(
            metric=score, **target, value=1.0, source=alice, timestamp=t0 + timedelta(minutes=5)
        )
        await live.ff.log_feedback(
            metric=score,
            **target,
            error={"code": "timeout", "message": "judge timed out"},
            source={"type": "llm_judge", "id": "judge-v2"},
            timestamp=t0,
        )
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 5
        )
    current = await db.fetch(
        "SELECT source_id, value_float, feedback_id, error_code, rationale "
        "FROM feedbackflow.feedback_current ORDER BY source_id"
    )
    by_source = {r["source_id"]: r for r in current}
    assert sorted(by_source) == ["alice", "judge-v1", "judge-v2"]
    assert by_source["alice"]["feedback_id"] == revision.feedback_id
    assert by_source["alice"]["value_float"] == 3.0
    assert by_source["judge-v1"]["rationale"] == "vivid imagery, correct 5-7-5"
    assert by_source["judge-v2"]["error_code"] == "timeout"
    agreement = await db.fetchrow(
        "SELECT sources, mean_value FROM feedbackflow.annotator_agreement WHERE metric = $1",
        "haiku_score",
    )
    assert agreement is not None
    assert agreement["sources"] == 2  # the judge that failed gave no value to agree with
    assert agreement["mean_value"] == 3.5
