"""A row the database refuses, for a reason decoding could not foresee, is split out of its
window into a dead letter carrying Postgres's own message; the rest of the window is stored.
A CHECK constraint stands in for such a reason (real Postgres, real worker)."""

from __future__ import annotations

import asyncpg

from tests.integration.harness import committed_to_the_end, count, live_pipeline, wait_until
from workers.devstack.servers import TansuBroker
from workers.stream.refusals import UNKNOWN_PARTITION


async def test_a_refused_row_is_a_dead_letter_and_its_window_is_stored(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    await db.execute(
        "ALTER TABLE feedbackflow.predictions"
        " ADD CONSTRAINT no_poison CHECK (application <> 'poison')"
    )
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        ids = []
        for i in range(300):
            application = "poison" if i in (10, 150, 299) else "generate_haiku"
            prediction = await live.ff.log_prediction(application=application)
            ids.append(prediction.prediction_id)
            await live.ff.log_feedback(
                metric="haiku_rating", prediction_id=prediction.prediction_id, value=True
            )
        await live.ff.flush()
        await wait_until(lambda: committed_to_the_end(live.settings), within=60, what="commits")
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 297
    rows = await db.fetch("SELECT * FROM feedbackflow.dead_letters ORDER BY kafka_offset")
    assert len(rows) == 3
    assert {(r["kafka_partition"], r["error_field"]) for r in rows} == {
        (UNKNOWN_PARTITION, "(row)")
    }
    assert all('violates check constraint "no_poison' in r["reason"] for r in rows)
    assert all(b'"application":"poison"' in r["payload"] for r in rows)
    # Their feedback waits for a prediction that will not come: pending, not lost.
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 300
    assert (
        await count(db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'") == 297
    )
