"""MLflow's assessments as its client reads them back: the gateway's directory.

Every assessment, revision, override and delete is a feedback event on Kafka (the history the
worker writes); this table maps an assessment id to the MLflow JSON last answered for it and to
the feedback event carrying its current value, so that ``get_assessment`` answers what was just
written without waiting for the worker's window, and an update knows what it updates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class StoredAssessment:
    assessment_id: UUID
    trace_id: str
    assessment: dict[str, Any]
    feedback_id: UUID
    deleted: bool


async def find(
    conn: asyncpg.Pool | asyncpg.Connection, assessment_id: UUID
) -> StoredAssessment | None:
    row = await conn.fetchrow(
        "SELECT assessment_id, trace_id, assessment::text AS assessment, feedback_id,"
        " deleted_at IS NOT NULL AS deleted"
        " FROM feedbackflow.mlflow_assessments WHERE assessment_id = $1",
        assessment_id,
    )
    if row is None:
        return None
    return StoredAssessment(
        row["assessment_id"],
        row["trace_id"],
        json.loads(row["assessment"]),
        row["feedback_id"],
        row["deleted"],
    )


async def remember(
    conn: asyncpg.Pool | asyncpg.Connection,
    trace_id: str,
    assessment: dict[str, Any],
    feedback_id: UUID,
) -> None:
    """A created assessment; a retried create (same id) changes nothing."""
    await conn.execute(
        "INSERT INTO feedbackflow.mlflow_assessments"
        " (assessment_id, trace_id, assessment, feedback_id) VALUES ($1, $2, $3::jsonb, $4)"
        " ON CONFLICT (assessment_id) DO NOTHING",
        UUID(assessment["assessment_id"]),
        trace_id,
        json.dumps(assessment),
        feedback_id,
    )


async def revise(
    conn: asyncpg.Pool | asyncpg.Connection,
    assessment: dict[str, Any],
    feedback_id: UUID,
    *,
    deleted: bool = False,
) -> None:
    """The assessment as it now stands, carried by ``feedback_id``; ``deleted`` records a
    delete (the row stays, as the feedback history does)."""
    await conn.execute(
        "UPDATE feedbackflow.mlflow_assessments SET assessment = $2::jsonb, feedback_id = $3,"
        " updated_at = now(), deleted_at = CASE WHEN $4 THEN now() END"
        " WHERE assessment_id = $1",
        UUID(assessment["assessment_id"]),
        json.dumps(assessment),
        feedback_id,
        deleted,
    )
