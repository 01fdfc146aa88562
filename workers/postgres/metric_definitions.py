"""Metrics defined at run time: stored in ``feedbackflow.metric_definitions``, seen by every
process within seconds, without a restart.

``feedbackflow.toml`` declares metrics in code; a gateway defines others while it runs (an
MLflow assessment name the config does not have; log10's feedback tasks).  A definition is the
metric's table as the config file would spell it, checked by the same code
(``ingest.metrics.registry.metric_from_table``), so a stored metric means what it would mean in
the file.  Each process keeps the config's registry and lays the stored metrics over it:
``MetricDefinitions.refresh`` reads the table (one small query) and hands a new registry to
whoever holds one (the worker's decoder, the gateway's admission) only when something changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ingest.metrics.registry import (
    ConfigError,
    Metric,
    MetricRegistry,
    metric_from_table,
)

log = logging.getLogger("feedbackflow.metrics")


class DefinitionConflict(ValueError):
    """The name is taken by another definition (in the config, or stored differently)."""


class MetricDefinitions:
    """The config's metrics with the stored ones laid over them.  ``registry`` is the current
    whole; ``on_change`` receives each new one (a process swaps it into what checks events)."""

    def __init__(
        self,
        configured: MetricRegistry,
        on_change: Callable[[MetricRegistry], None] = lambda _registry: None,
    ) -> None:
        self.configured = configured
        self.registry = configured
        self.on_change = on_change
        self._stored: dict[str, Any] = {}

    async def refresh(self, conn: asyncpg.Pool | asyncpg.Connection) -> MetricRegistry:
        """Read the stored definitions; a new registry only if they changed."""
        try:
            rows = await conn.fetch(
                "SELECT name, definition::text AS definition FROM feedbackflow.metric_definitions"
            )
        except asyncpg.UndefinedTableError:
            return self.registry  # not migrated yet: the config's metrics are all there is
        stored = {row["name"]: json.loads(row["definition"]) for row in rows}
        if stored != self._stored:
            self._stored = stored
            self.registry = self.configured.with_metrics(self._metrics(stored))
            self.on_change(self.registry)
        return self.registry

    def _metrics(self, stored: Mapping[str, Any]) -> dict[str, Metric]:
        metrics = {}
        for name, table in stored.items():
            if name in self.configured.metrics:
                continue  # the config file wins: it is the code's own declaration
            try:
                metrics[name] = metric_from_table(name, table)
            except ConfigError as exc:  # pragma: no cover - checked when it was stored
                log.error("stored metric definition %r is unusable: %s", name, exc)
        return metrics

    async def define(
        self,
        conn: asyncpg.Pool | asyncpg.Connection,
        name: str,
        table: Mapping[str, Any],
        *,
        origin: str,
        created_by: str,
    ) -> Metric:
        """Store a definition (checked as the config would check it) and return its metric.
        Defining the same thing again is a no-op; another definition under a taken name is a
        ``DefinitionConflict``; a definition the config would refuse is a ``ConfigError``."""
        metric = metric_from_table(name, table)
        if name in self.configured.metrics:
            raise DefinitionConflict(f"metric {name!r} is declared in the metric config")
        written = json.dumps(dict(table), sort_keys=True)
        stored = await conn.fetchval(
            "WITH inserted AS ("
            " INSERT INTO feedbackflow.metric_definitions (name, definition, origin, created_by)"
            " VALUES ($1, $2::jsonb, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING definition)"
            " SELECT definition::text FROM inserted"
            " UNION ALL SELECT definition::text FROM feedbackflow.metric_definitions"
            " WHERE name = $1 LIMIT 1",
            name,
            written,
            origin,
            created_by,
        )
        if json.loads(stored) != json.loads(written):
            raise DefinitionConflict(f"metric {name!r} is already defined as {stored}")
        await self.refresh(conn)
        return metric

    async def keep_fresh(self, pool: asyncpg.Pool, every_seconds: float) -> None:
        """Refresh every ``every_seconds`` until cancelled; a database away is logged once per
        outage and waited out (the last registry stays in force meanwhile)."""
        away = False
        while True:
            try:
                await self.refresh(pool)
                if away:
                    log.info("metric definitions readable again")
                away = False
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not away:
                    log.warning("cannot read metric definitions, keeping the last ones: %r", exc)
                away = True
            await asyncio.sleep(every_seconds)


@asynccontextmanager
async def kept_fresh(
    database_url: str,
    configured: MetricRegistry,
    on_change: Callable[[MetricRegistry], None],
    every_seconds: float,
) -> AsyncIterator[Callable[[], Awaitable[MetricRegistry]]]:
    """A process's metric definitions, read at once (when the database answers) and every
    ``every_seconds`` while the block runs, on a pool of one connection that the block closes;
    yields the call that re-reads them now."""
    metrics = MetricDefinitions(configured, on_change)
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    try:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            await metrics.refresh(pool)  # else the task below keeps trying
        refreshing = asyncio.create_task(metrics.keep_fresh(pool, every_seconds))
        try:
            yield lambda: metrics.refresh(pool)
        finally:
            refreshing.cancel()
            await asyncio.gather(refreshing, return_exceptions=True)
    finally:
        await pool.close()
