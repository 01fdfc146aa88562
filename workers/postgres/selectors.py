"""Tag selectors in a window's transaction: index the selectable tags of the window's
predictions, insert its selector feedback, resolve new and pending selectors, expire old ones.

The semantics and the SQL are in ``workers.postgres.selector_sql``.  Every statement here runs
only when the pipeline has selectable tags (``pipeline.selectable_tags``): without them there are
no selectors (decoding refuses them) and nothing to index, and a window pays nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import asyncpg

from workers.postgres import selector_sql
from workers.stream.window import WindowContents


class SelectorStep:
    def __init__(self, selectable_tags: tuple[str, ...], retention: timedelta) -> None:
        self.selectable_tags = list(selectable_tags)
        self.retention = retention

    @property
    def enabled(self) -> bool:
        return bool(self.selectable_tags)

    async def stage(self, conn: asyncpg.Connection, contents: WindowContents) -> None:
        if contents.selectors:
            await conn.copy_records_to_table(
                "stage_selectors",
                records=map(tuple, contents.selectors),
                columns=selector_sql.SELECTOR_COLUMNS,
            )

    async def index_tags(self, conn: asyncpg.Connection, contents: WindowContents) -> None:
        """After the window's predictions are inserted."""
        if self.enabled and contents.predictions:
            await conn.execute(selector_sql.INDEX_PREDICTION_TAGS, self.selectable_tags)

    async def resolve(
        self,
        conn: asyncpg.Connection,
        contents: WindowContents,
        now: datetime,
        span: tuple[datetime, datetime] | None,
    ) -> Counter[str]:
        """After the resolution lock: new selectors (``span``: their earliest and latest time,
        widened by DEDUPE_SPAN), then pending ones against this window's predictions, then
        expiry.  Counts the feedback the selectors became, as ``joined``."""
        resolved: Counter[str] = Counter()
        if not self.enabled:
            return resolved
        oldest = now - self.retention
        if span is not None:
            low, high = span
            await conn.execute(selector_sql.INSERT_SELECTORS, low, high)
            row = await conn.fetchrow(selector_sql.RESOLVE_NEW, now, low, high, self.retention)
            resolved["joined"] += row["feedback"] if row else 0
        if contents.predictions:
            row = await conn.fetchrow(selector_sql.RESOLVE_PENDING, now, oldest, now)
            resolved["joined"] += row["feedback"] if row else 0
        await conn.execute(selector_sql.EXPIRE_SELECTORS, oldest, now)
        return resolved
