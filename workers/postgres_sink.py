"""PostgresSink: writes one window in one transaction, idempotently.

The caller commits Kafka offsets only after ``write`` returns: a crash before that replays the
window, and the replay inserts nothing new (ids are idempotency keys), so Postgres holds every
event exactly once from an at-least-once stream.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from workers import join_sql
from workers.partitions import PartitionCatalog, day_of
from workers.window import WindowContents


@dataclass(frozen=True)
class WindowOutcome:
    """What one window changed in Postgres (replays count zero)."""

    predictions_inserted: int
    feedback_inserted: int
    dead_letters_inserted: int
    resolved: Counter[str]
    expired_unmatched: int


DEDUPE_SPAN = timedelta(days=1)  # join_sql.DEDUPE_SPAN


def _span(times: Iterable[datetime]) -> tuple[datetime, datetime]:
    """Earliest and latest of ``times``, widened by the dedupe span: constant partition bounds."""
    seen = list(times)
    return min(seen) - DEDUPE_SPAN, max(seen) + DEDUPE_SPAN


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 12`` or ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresSink:
    def __init__(self, conn: asyncpg.Connection, retention: timedelta) -> None:
        self.conn = conn
        self.retention = retention
        self.partitions = PartitionCatalog()
        self._staged = False

    async def _ensure_partitions(self, contents: WindowContents) -> None:
        conn = self.conn
        await self.partitions.ensure(
            conn, "predictions", {day_of(p.ts) for p in contents.predictions}
        )
        await self.partitions.ensure(conn, "feedback", {day_of(f.ts) for f in contents.feedback})
        await self.partitions.ensure(
            conn, "dead_letters", {day_of(d.kafka_ts) for d in contents.dead_letters}
        )

    async def write(self, contents: WindowContents, now: datetime) -> WindowOutcome:
        conn = self.conn
        if not self._staged:
            await conn.execute(join_sql.CREATE_STAGING)
            self._staged = True
        await self._ensure_partitions(contents)
        async with conn.transaction():
            if contents.predictions:
                await conn.copy_records_to_table(
                    "stage_predictions",
                    records=contents.predictions,
                    columns=join_sql.PREDICTION_COLUMNS,
                )
            if contents.feedback:
                await conn.copy_records_to_table(
                    "stage_feedback", records=contents.feedback, columns=join_sql.FEEDBACK_COLUMNS
                )
            if contents.dead_letters:
                await conn.copy_records_to_table(
                    "stage_dead_letters",
                    records=contents.dead_letters,
                    columns=join_sql.DEAD_LETTER_COLUMNS,
                )
            predictions = feedback = 0
            if contents.predictions:
                low, high = _span(p.ts for p in contents.predictions)
                predictions = _count(await conn.execute(join_sql.INSERT_PREDICTIONS, low, high))
            if contents.feedback:
                low, high = _span(f.ts for f in contents.feedback)
                feedback = _count(await conn.execute(join_sql.INSERT_FEEDBACK, low, high))
            await conn.execute(join_sql.RESOLUTION_LOCK)
            await conn.execute(join_sql.GATHER_QUEUED)
            await conn.execute(join_sql.ANALYZE_CANDIDATES)
            resolved: Counter[str] = Counter()
            dequeue = False
            bounds = await conn.fetchrow(join_sql.CANDIDATE_BOUNDS)
            if bounds is not None and bounds["ts_min"] is not None:
                id_low = bounds["id_time_min"] or now
                id_high = bounds["id_time_max"] or now
                rows = await conn.fetch(
                    join_sql.RESOLVE_CANDIDATES,
                    self.retention,
                    now,
                    bounds["ts_min"],
                    bounds["ts_max"],
                    id_low - DEDUPE_SPAN,
                    id_high + DEDUPE_SPAN,
                )
                resolved.update(r["status"] for r in rows)
                dequeue = any(r["queued"] for r in rows)
            unmatched = _count(
                await conn.execute(join_sql.EXPIRE_UNMATCHED, now - self.retention, now)
            )
            if dequeue:
                await conn.execute(join_sql.DEQUEUE_RESOLVED)
            await conn.execute(join_sql.ENQUEUE_UNRESOLVED)
            dead = 0
            if contents.dead_letters:
                dead = _count(await conn.execute(join_sql.INSERT_DEAD_LETTERS))
        return WindowOutcome(predictions, feedback, dead, resolved, unmatched)
