"""A drained backlog is written at once; live traffic still waits for its window.

After a restart the worker reads a backlog in full windows (the size cap).  Its last, partial
window holds late events: the worker writes it as soon as it has read everything, instead of a
window's length later.  Traffic that never put the worker a window's worth behind keeps the
window's length, which is what batches it.
"""

from __future__ import annotations

import asyncpg

from ingest.topics import TopicNames
from tests.integration.harness import (
    count,
    isolated_settings,
    make_topics,
    metric_registry,
    producer,
    running_worker,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker

CAP = 1_000
BACKLOG = 3_500  # three full windows and half of one
PREDICTIONS = "SELECT count(*) FROM feedbackflow.predictions"


async def _at_least(value: float, expected: float) -> bool:
    return value >= expected


async def test_the_end_of_a_backlog_is_written_without_waiting_for_the_window(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    settings = isolated_settings(
        kafka.bootstrap, database_url, window="120s", max_window_events=CAP
    )
    registry = metric_registry()
    await make_topics(settings, partitions=2)
    async with producer(settings, registry) as ff:
        for i in range(BACKLOG):
            await ff.log_prediction(application="backlog", inputs={"n": i})
        await ff.flush()

        async with running_worker(settings, registry) as worker:
            # All of it, the partial last window included, long before the window's 120 s.
            await wait_for_count(db, PREDICTIONS, BACKLOG, within=30)
            written = worker.telemetry.windows.labels("written")
            await wait_until(lambda: _at_least(written._value.get(), 4), what="4 windows")
            assert written._value.get() == 4

            # A few live events later: not a window's worth behind, so they wait for the timer.
            for i in range(10):
                await ff.log_prediction(application="live", inputs={"n": i})
            await ff.flush()
            consumed = worker.telemetry.events_consumed.labels(
                TopicNames(settings.topic_prefix).predictions
            )
            await wait_until(lambda: _at_least(consumed._value.get(), BACKLOG + 10), what="read")
            assert worker.loop is not None
            assert worker.loop.chain.window.buffer.events == 10  # read, and held for the timer
            assert await count(db, PREDICTIONS + " WHERE application = 'live'") == 0
        # Stopping the worker writes what it holds.
        assert await count(db, PREDICTIONS + " WHERE application = 'live'") == 10
