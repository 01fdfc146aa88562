"""Retention: drop whole day partitions once every event in them is past the retention.

Never a bulk DELETE: dropping a partition is a catalogue change, instant whatever its size, and
leaves no dead tuples for vacuum.  The one exception is the key directory, one table so that a
look-up is one probe (workers.postgres.key_directory): its rows of the dropped days are
deleted, found through a BRIN index on their time.  Pending feedback is expired first, so a
feedback that waited the whole retention is recorded as expired (and counted) before its day
is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from workers.postgres import join_sql, key_directory, read_model_sql, selector_sql
from workers.postgres.partitions import PARTITIONED_TABLES, existing_partitions
from workers.postgres.read_model_applier import apply_read_model


def first_day_kept(horizon: datetime) -> datetime:
    """The start of the oldest day partition retention keeps: a day goes once it ends by the
    horizon."""
    utc = horizon.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)


@dataclass(frozen=True)
class RetentionResult:
    expired: int
    dropped: list[str]


async def apply_retention(
    conn: asyncpg.Connection, retention: timedelta, now: datetime
) -> RetentionResult:
    horizon = now - retention
    # Under the resolution lock, like a window: the read model notes what expiry changes
    # (workers.postgres.read_model_sql), and no window resolves it meanwhile.
    async with conn.transaction():
        await conn.execute(join_sql.RESOLUTION_LOCK)
        await conn.execute(read_model_sql.NOTE_EXPIRY, horizon)
        status = await conn.execute(join_sql.EXPIRE_UNMATCHED, horizon, now)
    expired = int(status.rsplit(" ", 1)[-1])
    status = await conn.execute(selector_sql.EXPIRE_SELECTORS, horizon, now)
    expired += int(status.rsplit(" ", 1)[-1])
    # Every note so far folded in while its rows are still there (the trim below applies what
    # comes meanwhile, then drops what is older).
    await apply_read_model(conn)
    dropped: list[str] = []
    for table in PARTITIONED_TABLES:
        for name, day in await existing_partitions(conn, table):
            day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if day_end <= horizon:
                await conn.execute(f"DROP TABLE IF EXISTS feedbackflow.{name}")
                dropped.append(name)
    # The rollups and their helper tables, from the first day the partitions keep.
    await conn.execute(read_model_sql.TRIM, first_day_kept(horizon))
    # The directory's keys of the predictions dropped: every day that ended by the horizon.
    horizon_day = horizon.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    await conn.execute(key_directory.TRIM, horizon_day)
    return RetentionResult(expired, dropped)
