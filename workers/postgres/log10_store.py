"""log10's feedback tasks and feedback, as its client lists them back.

A feedback task is a metric defined at run time (``workers.postgres.metric_definitions``): a
``json`` metric with the task's schema and instruction, addressed by log10 through its task id.
A log10 feedback is a tag-selector feedback on the task's metric (``workers.postgres.selectors``
resolves it); this module keeps which task and organization it was sent for, so that
``log10 feedback list`` pages through it with the predictions it matched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from workers.postgres.metric_definitions import MetricDefinitions

_TASK_COLUMNS = "task_id, name, definition::text AS definition, task_selector, created_at"
_TASK = f"SELECT {_TASK_COLUMNS} FROM feedbackflow.metric_definitions"


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int


def _task(row: Mapping[str, Any]) -> dict[str, Any]:
    definition = json.loads(row["definition"])
    return {
        "id": str(row["task_id"]),
        "name": row["name"],
        "json_schema": definition.get("schema", {}),
        "instruction": definition.get("description") or "",
        "completion_tags_selector": list(row["task_selector"] or []),
        "created_at": row["created_at"].isoformat(),
    }


async def create_task(
    conn: asyncpg.Pool | asyncpg.Connection,
    metrics: MetricDefinitions,
    *,
    name: str,
    schema: Mapping[str, Any],
    instruction: str | None,
    selector: list[str],
    caller: str,
    task_id: UUID,
) -> dict[str, Any]:
    """Define the task's metric (the same task again is the same task) and answer it."""
    table: dict[str, Any] = {"type": "json", "schema": dict(schema)}
    if instruction:
        table["description"] = instruction
    await metrics.define(conn, name, table, origin="log10", created_by=caller)
    row = await conn.fetchrow(
        "UPDATE feedbackflow.metric_definitions"
        " SET task_id = coalesce(task_id, $2), task_selector = coalesce(task_selector, $3)"
        f" WHERE name = $1 RETURNING {_TASK_COLUMNS}",
        name,
        task_id,
        selector,
    )
    return _task(row)


async def find_task(
    conn: asyncpg.Pool | asyncpg.Connection, task_id: UUID
) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"{_TASK} WHERE task_id = $1", task_id)
    return None if row is None else _task(row)


async def list_tasks(conn: asyncpg.Pool | asyncpg.Connection, offset: int, limit: int) -> Page:
    rows = await conn.fetch(
        f"{_TASK} WHERE task_id IS NOT NULL ORDER BY created_at DESC, name OFFSET $1 LIMIT $2",
        offset,
        limit,
    )
    total = await conn.fetchval(
        "SELECT count(*) FROM feedbackflow.metric_definitions WHERE task_id IS NOT NULL"
    )
    return Page([_task(row) for row in rows], total)


async def remember_feedback(
    conn: asyncpg.Pool | asyncpg.Connection,
    feedback: Mapping[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO feedbackflow.log10_feedback"
        " (feedback_id, ts, task_id, organization_id, caller, answer)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (feedback_id) DO NOTHING",
        UUID(feedback["id"]),
        feedback["ts"],
        UUID(feedback["task_id"]),
        feedback["organization_id"],
        feedback["caller"],
        json.dumps(feedback["answer"]),
    )


# The answer as given at creation, with the task's name and what the selector has matched so far
# (empty until the worker resolved it; the selector's row carries its status).
_FEEDBACK = """
SELECT l.answer::text AS answer, d.name AS task_name, s.status,
       coalesce(s.matched_prediction_ids, '{}') AS matched
FROM feedbackflow.log10_feedback l
LEFT JOIN feedbackflow.metric_definitions d ON d.task_id = l.task_id
LEFT JOIN feedbackflow.selector_feedback s ON s.feedback_id = l.feedback_id AND s.ts = l.ts
"""


def _feedback(row: Mapping[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(row["answer"])
    answer["task_name"] = row["task_name"]
    answer["matched_completion_ids"] = [str(m) for m in row["matched"]]
    answer["status"] = row["status"] or "pending"
    return answer


async def list_feedback(
    conn: asyncpg.Pool | asyncpg.Connection,
    organization_id: str,
    task_id: UUID | None,
    offset: int,
    limit: int,
) -> Page:
    where = "l.organization_id = $1 AND ($2::uuid IS NULL OR l.task_id = $2)"
    rows = await conn.fetch(
        f"{_FEEDBACK} WHERE {where} ORDER BY l.created_at, l.feedback_id OFFSET $3 LIMIT $4",
        organization_id,
        task_id,
        offset,
        limit,
    )
    total = await conn.fetchval(
        f"SELECT count(*) FROM feedbackflow.log10_feedback l WHERE {where}",
        organization_id,
        task_id,
    )
    return Page([_feedback(row) for row in rows], total)


async def find_feedback(
    conn: asyncpg.Pool | asyncpg.Connection, organization_id: str, feedback_id: UUID
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"{_FEEDBACK} WHERE l.organization_id = $1 AND l.feedback_id = $2",
        organization_id,
        feedback_id,
    )
    return None if row is None else _feedback(row)
