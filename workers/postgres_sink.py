"""PostgresSink: writes one window in one transaction, idempotently.

The caller commits Kafka offsets only after ``write`` returns: a crash before that replays the
window, and the replay inserts nothing new (ids are idempotency keys), so Postgres holds every
event exactly once from an at-least-once stream.
"""

from __future__ import annotations

from collections import Counter
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
            predictions = _count(await conn.execute(join_sql.INSERT_PREDICTIONS))
            feedback = _count(await conn.execute(join_sql.INSERT_FEEDBACK))
            await conn.execute(join_sql.RESOLUTION_LOCK)
            await conn.execute(join_sql.GATHER_QUEUED)
            resolved = Counter(
                r["status"]
                for r in await conn.fetch(join_sql.RESOLVE_CANDIDATES, self.retention, now)
            )
            await conn.execute(join_sql.DEQUEUE_RESOLVED)
            resolved["expired"] += _count(
                await conn.execute(join_sql.EXPIRE_PAST_RETENTION_BY_ID_TIME, self.retention, now)
            )
            await conn.execute(join_sql.ENQUEUE_UNRESOLVED)
            unmatched = _count(
                await conn.execute(join_sql.EXPIRE_UNMATCHED, now - self.retention, now)
            )
            dead = 0
            if contents.dead_letters:
                dead = _count(await conn.execute(join_sql.INSERT_DEAD_LETTERS))
        return WindowOutcome(predictions, feedback, dead, resolved, unmatched)
