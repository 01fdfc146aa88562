"""The read model kept off the window's path (migration 0008, workers.postgres.read_model_applier):
windows only note what they changed, and an applier folds the notes in afterwards.  Whenever
and by whomever the notes are applied (after every window, once after many, by two appliers at
once), the rollups equal a rebuild from the tables, and no note is applied twice or lost."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from tests.integration.harness import wait_until
from tests.integration.read_model_checks import read_model_state, rebuilt_state
from workers.postgres import read_model_applier
from workers.postgres.read_model_applier import (
    ReadModelApplier,
    apply_read_model,
    notes_waiting,
)
from workers.postgres.sink import SinkConnection
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic as data

TOPICS = TopicNames("ff-applier")
RETENTION = timedelta(days=90)
WINDOWS = 4


def windows_with_revisions(events: int = 4_000) -> list[WindowContents]:
    """The bench's traffic (feedback before and after its prediction, a judge with a source id)
    with a revision of a third of the judge's ratings, placed later, cut into WINDOWS windows:
    feedback stored pending in one window is resolved in another, heads are replaced."""
    rng = random.Random(11)
    messages = list(data.generate(events).messages)
    revisions = []
    for m in messages:
        body = json.loads(m.value)
        if m.is_feedback and body["source"].get("id") and rng.random() < 1 / 3:
            later = body["timestamp"] + 60_000
            body |= {"feedback_id": str(uuid7(later)), "timestamp": later, "value": 1.0}
            revisions.append(data.Message(True, m.key, json.dumps(body).encode()))
    for revision in revisions:
        messages.insert(rng.randrange(len(messages) // 2, len(messages) + 1), revision)
    assert len(revisions) > 100
    size = -(-len(messages) // WINDOWS)
    cut = []
    for start in range(0, len(messages), size):
        buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
        decoded = data.decode(messages[start : start + size], TOPICS, data.registry())
        buffer.add(decoded, {("t", 0): start + size})
        cut.append(buffer.drain())
    return cut


@pytest.mark.parametrize("when", ["after every window", "once after all"])
async def test_notes_applied_whenever_give_the_rebuild_s_read_model(
    db: asyncpg.Connection, when: str
) -> None:
    sink = SinkConnection(db, RETENTION)
    written: list[int] = []
    for contents in windows_with_revisions():
        await sink.write(contents, datetime.now(UTC))
        written.append(await notes_waiting(db))
        if when == "after every window":
            assert await apply_read_model(db) == written[-1]
            assert await notes_waiting(db) == 0
    if when == "once after all":
        # Nothing reached the rollups yet: the windows only noted their changes.
        assert await db.fetchval("SELECT count(*) FROM feedbackflow.feedback_rollup") == 0
        assert await apply_read_model(db) == written[-1]
    assert all(n > 0 for n in written)
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.feedback_heads") > 0
    assert await apply_read_model(db) == 0  # nothing left, nothing applied twice
    assert await read_model_state(db) == await rebuilt_state(db)


async def test_two_appliers_at_once_apply_each_note_once(
    database_url: str, db: asyncpg.Connection
) -> None:
    sink = SinkConnection(db, RETENTION)
    for contents in windows_with_revisions():
        await sink.write(contents, datetime.now(UTC))
    waiting = await notes_waiting(db)
    applied: list[int] = []
    appliers = [
        ReadModelApplier(database_url, lambda notes, seconds: applied.append(notes))
        for _ in range(2)
    ]
    try:
        for applier in appliers:
            applier.notify()

        async def both_ran() -> bool:
            return len(applied) == 2

        await wait_until(both_ran, 30, what="both appliers to run")
    finally:
        await asyncio.gather(*(a.close() for a in appliers))
    # One took every note under the lock; the other, waiting for it, found none.
    assert sorted(applied) == [0, waiting]
    assert await notes_waiting(db) == 0
    assert await read_model_state(db) == await rebuilt_state(db)


async def test_a_window_replaying_some_predictions_counts_only_the_new_ones(
    db: asyncpg.Connection,
) -> None:
    """Coverage's predictions are counted by the sink from the window when all were inserted;
    a window with some stored before (a replay) counts, in SQL, only those it inserted."""
    first, second, *_ = windows_with_revisions()
    sink = SinkConnection(db, RETENTION)
    await sink.write(first, datetime.now(UTC))
    replayed = first.predictions[: len(first.predictions) // 2]
    overlapping = replace(second, predictions=replayed + second.predictions)
    outcome = await sink.write(overlapping, datetime.now(UTC))
    assert outcome.predictions_inserted == len(second.predictions)
    await apply_read_model(db)
    counted = await db.fetchval(
        "SELECT sum(predictions) FROM feedbackflow.prediction_coverage_rollup WHERE grain = '5m'"
    )
    assert counted == len(first.predictions) + len(second.predictions)
    assert await read_model_state(db) == await rebuilt_state(db)


async def test_the_applier_vacuums_the_notes_it_took(
    database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Applied notes are deleted rows: the applier vacuums them away every so many notes, so
    that a server without autovacuum does not make every apply read them again."""
    monkeypatch.setattr(read_model_applier, "VACUUM_EVERY_NOTES", 1)
    sink = SinkConnection(db, RETENTION)
    await sink.write(windows_with_revisions()[0], datetime.now(UTC))
    applier = ReadModelApplier(database_url)
    try:
        applier.notify()

        async def vacuumed() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables"
                    " WHERE relid = 'feedbackflow.read_model_queue'::regclass"
                )
            )

        await wait_until(vacuumed, 30, what="the notes' table to be vacuumed")
    finally:
        await applier.close()
    assert await notes_waiting(db) == 0


async def test_an_applier_that_crashed_starts_again_at_the_next_window(
    database_url: str, db: asyncpg.Connection
) -> None:
    calls: list[int] = []

    def applied(notes: int, seconds: float) -> None:
        calls.append(notes)
        if len(calls) == 1:
            raise RuntimeError("a bug in what runs after an apply")

    sink = SinkConnection(db, RETENTION)
    first, second, *_ = windows_with_revisions()
    applier = ReadModelApplier(database_url, applied)
    try:
        await sink.write(first, datetime.now(UTC))
        applier.notify()

        async def ran(times: int) -> bool:
            return len(calls) == times

        await wait_until(lambda: ran(1), 30, what="the first run")
        await sink.write(second, datetime.now(UTC))
        applier.notify()
        await wait_until(lambda: ran(2), 30, what="a run after the crash")
    finally:
        await applier.close()
    assert calls[1] > 0
    assert await notes_waiting(db) == 0
