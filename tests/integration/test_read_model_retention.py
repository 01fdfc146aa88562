"""Retention and the read model: expiring pending feedback moves its count from pending to
expired in the rollups, and dropping old days trims the rollups and their helper tables to what
a rebuild from the remaining days makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.integration.harness import count, live_pipeline, wait_for_count, wait_for_read_model
from tests.integration.read_model_checks import read_model_state, rebuilt_state
from workers.devstack.servers import TansuBroker
from workers.postgres.retention import apply_retention, first_day_kept
from workers.read_model import queries
from workers.read_model.rebuild import HELPER_TABLES, ROLLUP_TABLES

DAYS_91 = timedelta(days=91)


async def test_expiry_and_retention_keep_the_rollups_equal_to_a_rebuild(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    alice = {"type": "human", "id": "alice"}
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        start = live.clock.now()
        old = await live.ff.log_prediction(application="haiku", model="m-a")
        await live.ff.log_feedback(
            metric="haiku_rating", prediction_id=old.prediction_id, value=True, source=alice
        )
        await live.ff.log_feedback(metric="haiku_score", join_key="never", value=5, source=alice)
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'pending'", 1
        )
        await wait_for_read_model(db)
        day_one = queries.Selection(start - timedelta(hours=1), start + timedelta(hours=1))
        [waiting] = await queries.backlog(db, day_one)
        assert (waiting.metric, waiting.pending_count, waiting.expired_count) == (
            "haiku_score",
            1,
            0,
        )
        live.clock.advance(DAYS_91)
        # A later window expires what waited past the retention.
        await live.ff.log_prediction(application="haiku", model="m-b", timestamp=live.clock.now())
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'expired'", 1
        )
        await wait_for_read_model(db)
        [expired] = await queries.backlog(db, day_one)
        assert (expired.pending_count, expired.expired_count) == (0, 1)
        assert await read_model_state(db) == await rebuilt_state(db)

    later = live.clock.now() + timedelta(days=1)
    result = await apply_retention(db, live.settings.pipeline.retention, later)
    assert [name for name in result.dropped if name.startswith("feedback_")]
    kept_from = first_day_kept(later - live.settings.pipeline.retention)
    for table in ROLLUP_TABLES:
        assert (
            await count(
                db, f"SELECT count(*) FROM feedbackflow.{table} WHERE bucket < $1", kept_from
            )
            == 0
        ), table
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback_heads") == 0
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions_with_feedback") == 0
    # What is left: the late prediction, in coverage.
    trimmed = await read_model_state(db)
    assert [r for t in HELPER_TABLES for r in trimmed[t]] == []
    assert len(trimmed["prediction_coverage_rollup"]) == 3  # its 5m, 1h and 1d rows
    assert trimmed == await rebuilt_state(db)


async def test_retention_itself_expiring_feedback_moves_it_from_pending_to_expired(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    # Minute 5 of an hour: a minute past the retention after it, its day is still kept.
    sent = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=5, second=0, microsecond=0)
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        await live.ff.log_feedback(
            metric="haiku_score",
            join_key="never",
            value=5,
            source={"type": "human", "id": "alice"},
            timestamp=sent,
        )
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'pending'", 1
        )
    retention = live.settings.pipeline.retention
    result = await apply_retention(db, retention, sent + retention + timedelta(minutes=1))
    assert (result.expired, result.dropped) == (1, [])
    around = queries.Selection(sent - timedelta(hours=1), sent + timedelta(hours=1))
    [expired] = await queries.backlog(db, around)
    assert (expired.pending_count, expired.expired_count) == (0, 1)
    assert await read_model_state(db) == await rebuilt_state(db)
