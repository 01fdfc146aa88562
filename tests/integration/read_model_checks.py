"""What the read model's tests compare: the rollups as the windows left them, and as a rebuild
from the tables makes them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from workers.read_model.rebuild import HELPER_TABLES, ROLLUP_TABLES


def _nonzero(row: dict[str, Any]) -> bool:
    """A rollup row that still counts something (a row whose counts went back to 0 stays)."""
    return any(
        isinstance(v, int | Decimal) and not isinstance(v, bool) and v != 0 for v in row.values()
    )


async def read_model_state(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup's rows that count something, and the helper tables, sorted."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    for table in ROLLUP_TABLES + HELPER_TABLES:
        rows = [dict(r) for r in await db.fetch(f"SELECT * FROM feedbackflow.{table}")]
        kept = [r for r in rows if table in HELPER_TABLES or _nonzero(r)]
        state[table] = sorted((tuple(r.items()) for r in kept), key=repr)
    return state


async def rebuilt_state(db: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    async with db.transaction():
        await db.execute("SELECT feedbackflow.read_model_rebuild()")
    return await read_model_state(db)
