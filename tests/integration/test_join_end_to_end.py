"""The join, end to end: SDK → tansu → worker → PostgreSQL, asserting exact rows."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.integration.harness import (
    count,
    isolated_settings,
    make_topics,
    metric_registry,
    producer,
    running_worker,
    wait_for_count,
)
from workers.embedded import TansuBroker


async def test_feedback_in_the_same_window_as_its_prediction_is_joined(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url)
    registry = metric_registry()
    await make_topics(settings)
    async with running_worker(settings, registry), producer(settings, registry) as ff:
        prediction = await ff.log_prediction(
            application="generate_haiku",
            model="gpt-a",
            inputs={"topic": "rain"},
            outputs={"haiku": "..."},
        )
        await ff.log_feedback(
            metric="haiku_rating",
            prediction_id=prediction.prediction_id,
            value=True,
            source={"type": "end_user", "id": "u1"},
        )
        await ff.flush()
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
    settings = isolated_settings(kafka.bootstrap, database_url)
    registry = metric_registry()
    await make_topics(settings)
    async with running_worker(settings, registry), producer(settings, registry) as ff:
        feedback = await ff.log_feedback(metric="haiku_score", join_key="req-42", value=4.5)
        await ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'pending'", 1
        )
        await asyncio.sleep(1.5)  # a later window
        await ff.log_prediction(application="generate_haiku", model="gpt-b", join_key="req-42")
        await ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
    row = await db.fetchrow("SELECT * FROM feedbackflow.feedback")
    assert row is not None
    assert row["feedback_id"] == feedback.feedback_id
    assert (row["model"], row["value_float"]) == ("gpt-b", 4.5)
