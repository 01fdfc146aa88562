"""Retention: feedback past it is expired with a reason, and old days are dropped whole.

The worker's clock is shifted forward instead of waiting 90 days.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from ingest.sdk.producer import build_prediction, uuid7
from tests.integration.harness import (
    count,
    live_pipeline,
    wait_for_count,
)
from workers.devstack.servers import TansuBroker
from workers.postgres.partitions import existing_partitions
from workers.postgres.retention import apply_retention

DAYS_91 = timedelta(days=91)


async def test_feedback_more_than_the_retention_after_its_prediction_is_expired_with_reason(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        prediction = await live.ff.log_prediction(application="generate_haiku", model="gpt-a")
        await live.ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 1)
        live.clock.advance(DAYS_91)
        await live.ff.log_feedback(
            metric="haiku_rating",
            prediction_id=prediction.prediction_id,
            value=True,
            timestamp=live.clock.now(),
        )
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'expired'", 1
        )
    row = await db.fetchrow(
        "SELECT status_reason, prediction_id, delay_seconds FROM feedbackflow.feedback"
    )
    assert row is not None
    assert row["status_reason"] == "prediction_past_retention"
    assert row["prediction_id"] == prediction.prediction_id
    assert row["delay_seconds"] > timedelta(days=90).total_seconds()


async def test_pending_feedback_whose_prediction_never_comes_expires_after_the_retention(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        await live.ff.log_feedback(metric="haiku_score", join_key="never-predicted", value=5)
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'pending'", 1
        )
        live.clock.advance(DAYS_91)
        # Any later window runs the expiry.
        await live.ff.log_prediction(application="generate_haiku", timestamp=live.clock.now())
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'expired'", 1
        )
    reason = await db.fetchval("SELECT status_reason FROM feedbackflow.feedback")
    assert reason == "no_prediction_within_retention"
    assert await count(db, "SELECT count(*) FROM feedbackflow.pending_feedback") == 0


async def test_retention_drops_whole_old_partitions_and_labels_for_dropped_predictions_expire(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        old = await live.ff.log_prediction(application="generate_haiku", model="gpt-a")
        await live.ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 1)
        live.clock.advance(DAYS_91 + timedelta(days=1))
        result = await apply_retention(db, live.settings.pipeline.retention, live.clock.now())
        assert [name for name in result.dropped if name.startswith("predictions_")]
        assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 0
        # A label for the dropped prediction: its UUIDv7 id says how old it was.
        await live.ff.log_feedback(
            metric="haiku_rating",
            prediction_id=old.prediction_id,
            value=False,
            timestamp=live.clock.now(),
        )
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'expired'", 1
        )
    assert await db.fetchval("SELECT status_reason FROM feedbackflow.feedback") == (
        "prediction_past_retention"
    )
    remaining = [day for _, day in await existing_partitions(db, "predictions")]
    horizon = (live.clock.now() - live.settings.pipeline.retention).date()
    assert all(day >= horizon for day in remaining)


async def test_events_older_than_the_retention_are_dead_lettered_not_stored(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        ancient = live.clock.now() - DAYS_91
        event = build_prediction(
            prediction_id=uuid7(int(ancient.timestamp() * 1000)),
            application="generate_haiku",
            timestamp=ancient,
        )
        await live.ff.send_raw(
            live.topics.predictions, event.effective_join_key, event.model_dump_json().encode()
        )
        await live.ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.dead_letters", 1)
    row = await db.fetchrow("SELECT error_field, reason FROM feedbackflow.dead_letters")
    assert row is not None
    assert row["error_field"] == "timestamp"
    assert "older than the 90d retention" in row["reason"]
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 0
