"""Day partitions: created on demand before a window is written, dropped whole by retention.

Partition names carry their day (``predictions_p20261125``) so that retention reads the day from
the catalogue without parsing bounds.  Creation runs outside the window's transaction: a ``CREATE``
that races another worker fails alone and is retried, without replaying the window.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import asyncpg

PARTITIONED_TABLES = (
    "predictions",
    "feedback",
    "dead_letters",
    "prediction_tags",
    "selector_feedback",
)


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_of(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


DAY_MICROS = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def days_of(times: Iterable[int]) -> set[date]:
    """The UTC days of event times in micros (workers.stream.decode.micros), one division each."""
    return {date.fromordinal(_EPOCH_ORDINAL + day) for day in {t // DAY_MICROS for t in times}}


class PartitionCatalog:
    """Remembers which day partitions exist, so the hot path asks Postgres only for new days."""

    def __init__(self) -> None:
        self._known: set[tuple[str, date]] = set()

    async def ensure(self, conn: asyncpg.Connection, table: str, days: Iterable[date]) -> None:
        for day in sorted(set(days)):
            if (table, day) in self._known:
                continue
            for attempt in range(5):
                try:
                    await conn.execute(_create_sql(table, day))
                    break
                except (
                    asyncpg.DuplicateTableError,
                    asyncpg.UniqueViolationError,
                    asyncpg.DeadlockDetectedError,
                ):
                    # Another worker created it at the same moment; IF NOT EXISTS now holds.
                    if attempt == 4:
                        raise
            self._known.add((table, day))


def _create_sql(table: str, day: date) -> str:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    return (
        f"CREATE TABLE IF NOT EXISTS feedbackflow.{partition_name(table, day)} "
        f"PARTITION OF feedbackflow.{table} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


async def existing_partitions(conn: asyncpg.Connection, table: str) -> list[tuple[str, date]]:
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = 'feedbackflow' AND p.relname = $1
        """,
        table,
    )
    found = []
    for row in rows:
        name: str = row["relname"]
        suffix = name.rsplit("_p", 1)[-1]
        found.append((name, datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=UTC).date()))
    return sorted(found, key=lambda item: item[1])
