"""What noting its changes for the read model costs a window (migration 0008): the two statements
that note, timed against the same statements without their notes, on one staged window.

The bench's events are written by ``SinkConnection`` as the worker writes them (the read model
applied after each window, as the worker's applier does), all but the last window.  The last is
staged once; then, in one transaction, each variant runs and is rolled back to a savepoint,
alternating, ``repeats`` times: the two variants see the same rows, the same tables and the same
moment of a shared machine, so their difference is the noting itself, which whole-window runs
(``bench.run statements``) cannot resolve under this machine's noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.window_statements import windows_of
from workers.postgres import join_sql, read_model_sql
from workers.postgres.read_model_applier import apply_read_model
from workers.postgres.read_model_changes import note_changes, predictions_per_bucket
from workers.postgres.sink import SinkConnection, _span
from workers.stream.window import WindowContents
from workers.testing import traffic as data
from workers.time_spans import ID_TIME_SPAN

RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class NotingCost:
    window_events: int
    window_seconds: list[float]  # the whole writes of the windows before, per window
    seconds: dict[str, list[float]]  # per variant, per repeat

    def us_per_event(self, name: str) -> float:
        return 1e6 * statistics.median(self.seconds[name]) / self.window_events

    @property
    def window_us_per_event(self) -> float:
        return 1e6 * statistics.median(self.window_seconds) / self.window_events

    @property
    def noting_us_per_event(self) -> float:
        """The notes' cost: each noting statement's median less its plain twin's."""
        return sum(
            self.us_per_event(f"{s} noted") - self.us_per_event(f"{s} plain")
            for s in ("predictions", "feedback")
        )


def _without_notes(sql: str) -> str:
    """INSERT_FEEDBACK as it would be with no note of its rows (its CTE ``noted`` taken out)."""
    noted = f"), noted AS ({note_changes('inserted', was_pending=False)}\n"
    assert noted in sql, "INSERT_FEEDBACK's notes are not where the bench looks for them"
    return sql.replace(noted, "\n")


async def measure(
    database_url: str, events: data.EventSet, window_events: int, repeats: int
) -> NotingCost:
    windows = windows_of(events, window_events)
    *before, last = windows
    conn = await asyncpg.connect(database_url)
    try:
        sink = SinkConnection(conn, RETENTION)
        written: list[float] = []
        for contents in before:
            started = time.perf_counter()
            await sink.write(contents, datetime.now(UTC))
            written.append(time.perf_counter() - started)
            await apply_read_model(conn)
        seconds = await _alternate(sink, last, repeats)
        return NotingCost(len(last.predictions) + len(last.feedback), written, seconds)
    finally:
        await conn.close()


async def _predictions_noted(
    conn: asyncpg.Connection, contents: WindowContents, low: datetime, high: datetime
) -> None:
    """The window's predictions inserted and counted for coverage, as SinkConnection.write does."""
    await conn.execute(join_sql.INSERT_PREDICTIONS, low, high)
    counted = predictions_per_bucket(contents.predictions)
    await conn.execute(read_model_sql.NOTE_PREDICTIONS, *counted)


async def _alternate(
    sink: SinkConnection, contents: WindowContents, repeats: int
) -> dict[str, list[float]]:
    conn, now = sink.conn, datetime.now(UTC)
    low, high = _span(p.ts for p in contents.predictions)
    f_low, f_high = _span(f.ts for f in contents.feedback)
    lookups = frozenset(
        join_sql.target_lookup(f.target_prediction_id, f.target_id_time, f.target_join_key)
        for f in contents.feedback
    )
    noted_feedback = join_sql.insert_feedback(lookups)
    assert lookups <= {"uuid7_id"}, lookups  # the bench's feedback names UUIDv7 predictions
    id_times = [f.target_id_time for f in contents.feedback if f.target_id_time is not None]
    id_low, id_high = _span(id_times, ID_TIME_SPAN)
    feedback_args = (f_low, f_high, RETENTION, now, id_low, id_high)
    statements: dict[str, Callable[[], Awaitable[object]]] = {
        "predictions plain": lambda: conn.execute(join_sql.INSERT_PREDICTIONS, low, high),
        "predictions noted": lambda: _predictions_noted(conn, contents, low, high),
        "feedback plain": lambda: conn.fetch(_without_notes(noted_feedback), *feedback_args),
        "feedback noted": lambda: conn.fetch(noted_feedback, *feedback_args),
    }
    seconds: dict[str, list[float]] = {name: [] for name in statements}
    async with conn.transaction():
        # Staged as a window is (the bench reaches into the sink for it: nothing else stages).
        await sink._ensure_partitions(contents)  # noqa: SLF001
        await sink._stage(contents)  # noqa: SLF001
        for repeat in range(repeats):
            for kind in ("predictions", "feedback"):
                order = ("plain", "noted") if repeat % 2 == 0 else ("noted", "plain")
                for variant in order:
                    name = f"{kind} {variant}"
                    savepoint = conn.transaction()
                    await savepoint.start()
                    if kind == "feedback":  # its predictions first, as in a window
                        await conn.execute(join_sql.INSERT_PREDICTIONS, low, high)
                    started = time.perf_counter()
                    await statements[name]()
                    seconds[name].append(time.perf_counter() - started)
                    await savepoint.rollback()
    return seconds
