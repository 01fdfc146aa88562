"""Versioned schema migrations: ``workers/postgres/migrations/NNNN_name.sql``, applied once
each, in order.

An advisory lock serialises concurrent ``feedbackflow migrate`` runs (several workers starting at
once), and each file runs in its own transaction together with its bookkeeping row, so a failed
migration leaves no half-applied schema and running the command twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg

_LOCK_KEY = 0x46464C4F57  # "FFLOW"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("workers.postgres.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply what is missing; return what was applied (empty when up to date)."""
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.feedbackflow_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]
            for r in await conn.fetch("SELECT version FROM public.feedbackflow_migrations")
        }
        for migration in available_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO public.feedbackflow_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def pending_migrations(conn: asyncpg.Connection) -> list[Migration]:
    """The migrations this code has that the database has not applied (read-only: a worker
    without DDL rights asks this before it starts)."""
    table = await conn.fetchval("SELECT to_regclass('public.feedbackflow_migrations')")
    done: set[int] = set()
    if table is not None:
        done = {
            r["version"]
            for r in await conn.fetch("SELECT version FROM public.feedbackflow_migrations")
        }
    return [m for m in available_migrations() if m.version not in done]
