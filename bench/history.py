"""Cost that does not grow with history: the time ``SinkConnection.write`` takes to close one
50k-event window with 100 thousand predictions stored, then with 10 million.

The history is generated server-side (``INSERT ... SELECT generate_series``), in time order with
UUIDv7 ids, one day partition at a time, spread over 80 days, then ANALYZEd as autovacuum would.
The window has the bench's shape: 35k new predictions, 15k feedback of which 20% is early (its
prediction is not stored: it stays pending), 40% targets this window's predictions and 40%
targets predictions already stored, chosen at random across the history.  Each timed write uses
fresh ids; the reported time is the median of the runs.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.ceilings import ensure_days, recent_days
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.postgres import join_sql, read_model_sql
from workers.postgres.sink import SinkConnection
from workers.stream.decode import DecodedBatch
from workers.stream.window import WindowBuffer
from workers.testing import traffic as data

HISTORY_DAYS = 80
WINDOW_EVENTS = 50_000
TOPICS = TopicNames("ffbench-history")

# A UUIDv7 from the row's time, made in SQL (48-bit ms, version 7, variant 10, random bits).
_INSERT_DAY = """
INSERT INTO feedbackflow.predictions (prediction_id, join_key, ts, episode_id, application,
    model, inputs, outputs, tags, ingested_at)
SELECT g.id, g.id::text, g.t, NULL, 'generate_haiku',
       CASE WHEN g.n % 2 = 0 THEN 'gpt-haiku-a' ELSE 'gpt-haiku-b' END,
       '{"topic": "rain", "temperature": 0.7}'::jsonb,
       '{"haiku": "rain at dusk / five seven five syllables / the worker joins it"}'::jsonb,
       '{"env": "bench"}'::jsonb, g.t
FROM (
    SELECT s.n, s.t,
           (lpad(to_hex(floor(extract(epoch FROM s.t) * 1000)::bigint), 12, '0') || '7'
            || substr(s.h, 1, 3) || '8' || substr(s.h, 4, 15))::uuid AS id
    FROM (SELECT n, $1::timestamptz + n * $2::interval AS t, md5(random()::text || n) AS h
          FROM generate_series(0, $3 - 1) n) s
) g
"""


async def _load_day(url: str, day_start: datetime, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        step = timedelta(days=1) / max(rows, 1)
        await conn.execute(_INSERT_DAY, day_start, step, rows)
    finally:
        await conn.close()


async def grow_history(url: str, total: int, already: int) -> float:
    """Add predictions until ``total`` are stored, spread evenly over the last 80 days (two
    connections: one per core).  Returns seconds spent."""
    started = time.perf_counter()
    add = total - already
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=d) for d in range(1, HISTORY_DAYS + 1)]
    per_day = [add // HISTORY_DAYS + (1 if i < add % HISTORY_DAYS else 0) for i in range(len(days))]
    jobs = list(zip(days, per_day, strict=True))
    conn = await asyncpg.connect(url)
    try:
        await ensure_days(conn, ("predictions", "feedback"), recent_days(back=HISTORY_DAYS + 1))
    finally:
        await conn.close()
    for i in range(0, len(jobs), 2):
        await asyncio.gather(*(_load_day(url, day, rows) for day, rows in jobs[i : i + 2] if rows))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE feedbackflow.predictions")
        await conn.execute("ANALYZE feedbackflow.feedback")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _stored_targets(conn: asyncpg.Connection, count: int, stored: int) -> list[str]:
    percent = min(100.0, 100.0 * 3 * count / max(stored, 1))
    rows = await conn.fetch(
        f"SELECT prediction_id FROM feedbackflow.predictions TABLESAMPLE BERNOULLI ({percent})"
        " LIMIT $1",
        count,
    )
    return [str(r["prediction_id"]) for r in rows]


def _window(rng: random.Random, stored_targets: list[str]) -> DecodedBatch:
    """One 50k-event window of the bench's shape, decoded by the worker's own decoder."""
    n_feedback = round(WINDOW_EVENTS * data.FEEDBACK_SHARE)
    n_predictions = WINDOW_EVENTS - n_feedback
    now_ms = int(time.time() * 1000)
    messages: list[data.Message] = []
    window_ids: list[str] = []
    for _ in range(n_predictions):
        pid, value = data.prediction_payload(rng, now_ms)
        window_ids.append(pid)
        messages.append(data.Message(False, pid.encode(), value))
    n_early = round(n_feedback * data.EARLY_SHARE)
    n_stored = (n_feedback - n_early) // 2
    n_same = n_feedback - n_early - n_stored
    targets = (
        [str(uuid7(now_ms)) for _ in range(n_early)]  # early: prediction not stored yet
        + rng.sample(stored_targets, n_stored)
        + rng.sample(window_ids, n_same)
    )
    for target in targets:
        messages.append(
            data.Message(True, target.encode(), data.feedback_payload(rng, target, now_ms))
        )
    return data.decode(messages, TOPICS, data.registry())


class TimedConnection:
    """Delegates to an asyncpg connection and adds up seconds per SQL statement, so that the
    report can say which step of ``SinkConnection.write`` the time goes to (no worker change)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    @contextmanager
    def _timing(self, what: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - started

    async def execute(self, query: str, *args: Any) -> Any:
        with self._timing(_statement_name(query)):
            return await self._conn.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> Any:
        with self._timing(_statement_name(query)):
            return await self._conn.fetch(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        with self._timing(_statement_name(query)):
            return await self._conn.fetchval(query, *args)

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> Any:
        with self._timing(f"COPY {table}"):
            return await self._conn.copy_records_to_table(table, **kwargs)


def _statement_name(query: str) -> str:
    """The name of the ``workers.postgres.join_sql`` (or ``read_model_sql``) statement ``query``
    is, whatever statements exist: a constant's name, or the name a built statement gives in its
    first line."""
    first = query.split("\n", 1)[0]
    if first.startswith(join_sql.STATEMENT_NAME):
        return first.removeprefix(join_sql.STATEMENT_NAME)
    for module in (join_sql, read_model_sql):
        for name, value in vars(module).items():
            if name.isupper() and value == query:
                return str(name)
    return "other (partitions, transaction)"


@dataclass(frozen=True)
class HistoryPoint:
    stored_predictions: int
    write_seconds: list[float]
    statement_seconds: dict[str, float]

    @property
    def median(self) -> float:
        return statistics.median(self.write_seconds)


async def time_window_writes(url: str, stored: int, runs: int, seed: int) -> HistoryPoint:
    """One untimed warm-up write, then ``runs`` timed ``SinkConnection.write`` of fresh windows."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(url)
    try:
        await ensure_days(conn, ("predictions", "feedback"), recent_days(back=HISTORY_DAYS + 1))
        timed = TimedConnection(conn)
        sink = SinkConnection(timed, retention=timedelta(days=90))
        targets = await _stored_targets(conn, WINDOW_EVENTS, stored)
        times = []
        per_statement: dict[str, float] = {}
        for run in range(runs + 1):
            decoded = _window(rng, targets)
            buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
            buffer.add(decoded, {("bench", 0): run + 1})
            contents = buffer.drain()
            timed.seconds.clear()
            started = time.perf_counter()
            await sink.write(contents, datetime.now(UTC))
            if run:  # run 0 warms caches and creates the staging tables
                times.append(time.perf_counter() - started)
                for name, seconds in timed.seconds.items():
                    per_statement[name] = per_statement.get(name, 0.0) + seconds / runs
        return HistoryPoint(stored, times, per_statement)
    finally:
        await conn.close()
