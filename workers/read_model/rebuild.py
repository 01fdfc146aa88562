"""Rebuild the read model from the tables: every rollup and helper table recomputed from
feedback and predictions (``feedbackflow read-model rebuild``; the migration that made them
fills them the same way).  One transaction under the resolution lock: windows wait, and the
dashboards read the old rollups until it commits."""

from __future__ import annotations

import asyncpg

from workers.postgres import read_model_sql

# The rollups, and the rows they hold once rebuilt (zero rows dropped).
ROLLUP_TABLES = (
    "feedback_rollup",
    "feedback_category_rollup",
    "feedback_delay_rollup",
    "prediction_coverage_rollup",
    "agreement_pair_rollup",
    "agreement_item_rollup",
    "agreement_category_rollup",
)
HELPER_TABLES = ("feedback_heads", "predictions_with_feedback")


async def rebuild(conn: asyncpg.Connection) -> dict[str, int]:
    """Recompute the read model; the rows each table holds after."""
    async with conn.transaction():
        await conn.execute(read_model_sql.REBUILD)
    counts: dict[str, int] = {}
    for table in ROLLUP_TABLES + HELPER_TABLES:
        counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM feedbackflow.{table}"))
    return counts
