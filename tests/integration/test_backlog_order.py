"""Draining a backlog, feedback does not overtake the predictions sent before it.

A worker that starts behind reads both topics at once; the feedback topic, with fewer and smaller
messages, drains faster.  Without workers/stream/hold_back.py most of this backlog's feedback
would be written before its prediction and go through the pending queue; with it, feedback waits
in the worker until its partition's predictions have been read up to its Kafka timestamp.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.integration.harness import (
    isolated_settings,
    make_topics,
    metric_registry,
    producer,
    running_worker,
    wait_for_count,
)
from workers.devstack.servers import TansuBroker

BACKLOG = 6_000
# ~4 KB predictions: a partition's 2,000 of them take two 4 MB fetches, while the small feedback
# of every partition arrives in the first, ahead of most of the predictions it names.
HAIKU_REPEAT = 100


@pytest.mark.parametrize("partitions", [1, 3])
async def test_a_backlog_of_feedback_is_joined_without_the_pending_queue(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, partitions: int
) -> None:
    """With several partitions, more feedback is fetched ahead than the hold-back may keep (a
    window's worth): the worker must then read only predictions until it has room again, or
    the feedback beyond that bound goes ahead of its prediction."""
    # Small windows, so that the backlog spans many fetches and windows.
    settings = isolated_settings(kafka.bootstrap, database_url, max_window_events=1_000)
    registry = metric_registry()
    await make_topics(settings, partitions=partitions)
    async with producer(settings, registry) as ff:
        ids = []
        for i in range(BACKLOG):
            prediction = await ff.log_prediction(
                application="generate_haiku",
                inputs={"topic": "rain", "n": i},
                outputs={"haiku": "rain at dusk / five seven five syllables / " * HAIKU_REPEAT},
            )
            ids.append(prediction.prediction_id)
        await ff.flush()
        for prediction_id in ids:
            await ff.log_feedback(metric="haiku_rating", prediction_id=prediction_id, value=True)
        await ff.flush()

    async with running_worker(settings, registry) as worker:
        await wait_for_count(
            db,
            "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'",
            BACKLOG,
            within=120,
        )
        queued = worker.telemetry.feedback_queued._value.get()
        windows = worker.telemetry.windows.labels("written")._value.get()
    assert windows >= BACKLOG / 1_000  # the backlog spanned many windows
    assert queued == 0
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.pending_feedback") == 0
