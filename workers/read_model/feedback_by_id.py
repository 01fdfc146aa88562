"""One stored feedback by its id, as the gateway reads it back (MLflow's get assessment)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from workers.time_spans import DEDUPE_SPAN

_COLUMNS = (
    "feedback_id, ts, metric, target_join_key, value_bool, value_float, value_text,"
    " value_json::text AS value_json, error_code, error_message, rationale, source_type,"
    " source_id, metadata::text AS metadata, status"
)


async def stored_feedback(
    conn: asyncpg.Pool | asyncpg.Connection, feedback_id: UUID
) -> dict[str, Any] | None:
    """The row, its jsonb columns parsed, or None.  A UUIDv7 id carries its event's time
    (give or take the span a retry's time may differ by), so only the day partitions around it
    are searched; another id searches them all."""
    n = feedback_id.int
    if (n >> 76) & 0xF == 7:
        at = datetime.fromtimestamp((n >> 80) / 1000, tz=UTC)
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM feedbackflow.feedback"  # noqa: S608 - constant columns
            " WHERE feedback_id = $1 AND ts BETWEEN $2 AND $3",
            feedback_id,
            at - DEDUPE_SPAN - timedelta(days=1),
            at + DEDUPE_SPAN + timedelta(days=1),
        )
    else:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM feedbackflow.feedback WHERE feedback_id = $1",  # noqa: S608
            feedback_id,
        )
    if row is None:
        return None
    stored = dict(row)
    stored["metadata"] = json.loads(stored["metadata"])
    if stored["value_json"] is not None:
        stored["value_json"] = json.loads(stored["value_json"])
    return stored
