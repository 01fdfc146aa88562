"""Where a window write's time goes: the bench's events, in the order they were produced, cut
into 50k-event windows and written one after another by ``SinkConnection`` on a fresh database,
each statement timed (``bench.history.TimedConnection``).  After each window, the read
model's applier folds its notes in, on the same connection, as the worker's does on its own
right after the commit: timed apart (``apply_seconds``), not part of the window's write.

No broker and no overlap: this isolates the SQL from the worker's loop, for comparing two
versions of ``workers/postgres/join_sql.py`` (run it in both worktrees, interleaved).  Times
include the client's side of each statement (for COPY, asyncpg's encoding of the rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.history import TimedConnection
from ingest.topics import TopicNames
from workers.postgres.read_model_applier import apply_read_model
from workers.postgres.sink import SinkConnection
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic as data

TOPICS = TopicNames("ffbench-statements")


@dataclass(frozen=True)
class StatementTimes:
    events: int
    seconds: float
    per_statement: dict[str, float]
    apply_seconds: float

    def per_event_us(self, seconds: float) -> float:
        return 1e6 * seconds / self.events


def windows_of(events: data.EventSet, window_events: int) -> list[WindowContents]:
    """The events in production order, cut into windows of ``window_events`` as the worker's
    buffer makes them."""
    registry = data.registry()
    windows = []
    for start in range(0, events.events, window_events):
        chunk = events.messages[start : start + window_events]
        buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
        buffer.add(data.decode(chunk, TOPICS, registry), {("bench", 0): start + len(chunk)})
        windows.append(buffer.drain())
    return windows


async def time_statements(
    database_url: str, events: data.EventSet, window_events: int
) -> StatementTimes:
    conn = await asyncpg.connect(database_url)
    try:
        timed = TimedConnection(conn)
        sink = SinkConnection(timed, retention=timedelta(days=90))
        total = applying = 0.0
        for contents in windows_of(events, window_events):
            started = time.perf_counter()
            await sink.write(contents, datetime.now(UTC))
            total += time.perf_counter() - started
            started = time.perf_counter()
            await apply_read_model(conn)
            applying += time.perf_counter() - started
        return StatementTimes(events.events, total, dict(timed.seconds), applying)
    finally:
        await conn.close()
