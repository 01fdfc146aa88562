"""Current feedback values, filtered, optionally with their predictions: what export reads.

"Current" is defined here and only here for the export (as ``feedbackflow.feedback_current``
defines it for dashboards): of the feedback with the same target, metric and source id, the
latest timestamp wins, ties broken by feedback id; feedback without a source id revises nothing.
``as_of`` asks for the values as they stood at a time: feedback (revisions included) whose
own timestamp is after it is ignored, so a dataset exported then can be rebuilt.  Event time, not
the time a row was stored: a backfill stores months of history today, and its as-of must still
mean its history.  (Feedback stored later with an earlier timestamp does appear.)

Filters on the revision key (metric) and ``as_of`` apply before the current value is chosen;
the others after it, so a filter never makes an older revision look current.

Rows come from a server-side cursor in the order (feedback time, feedback id): memory stays a
cursor's prefetch whatever the table's size, and the order is the same on every run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

CURSOR_PREFETCH = 2_000

FEEDBACK_COLUMNS = (
    "feedback_id",
    "ts",
    "metric",
    "metric_type",
    "target_kind",
    "join_key",
    "value_bool",
    "value_float",
    "value_text",
    "value_json",
    "error_code",
    "error_message",
    "rationale",
    "source_type",
    "source_id",
    "tags",
    "metadata",
    "status",
    "status_reason",
    "prediction_id",
    "application",
    "model",
    "prediction_ts",
    "delay_seconds",
)
PREDICTION_COLUMNS = ("episode_id", "inputs", "outputs", "prediction_tags")
_JSON_COLUMNS = frozenset(
    {"value_json", "tags", "metadata", "inputs", "outputs", "prediction_tags"}
)

# The revision rule, the one place it is spelled for the export.
_CURRENT = """
SELECT DISTINCT ON (target_kind, join_key, metric, COALESCE(source_id, feedback_id::text)) *
FROM feedbackflow.feedback
WHERE {before}
ORDER BY target_kind, join_key, metric, COALESCE(source_id, feedback_id::text),
         ts DESC, feedback_id DESC
"""


@dataclass(frozen=True)
class FeedbackFilter:
    metrics: Sequence[str] = ()
    applications: Sequence[str] = ()
    models: Sequence[str] = ()
    statuses: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    # Each must be in the feedback's tags or its prediction's.
    tags: dict[str, str] = field(default_factory=dict)
    source_types: Sequence[str] = ()
    source_ids: Sequence[str] = ()
    as_of: datetime | None = None
    positive_only: bool = False  # boolean metrics: only the values that are true


@dataclass
class _Sql:
    args: list[Any] = field(default_factory=list)

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def current_feedback_sql(
    where: FeedbackFilter,
    with_predictions: bool,
    limit: int | None,
    one_per_prediction: bool = False,
) -> tuple[str, list[Any]]:
    """The statement and its arguments (built from constant text and ``$n`` parameters).
    ``one_per_prediction``: the first feedback of each prediction only (a prediction rated
    positive by two annotators is one training example)."""
    sql = _Sql()
    before = _before(where, sql)
    after = _after(where, sql)
    columns = [f"c.{name}" for name in FEEDBACK_COLUMNS]
    if with_predictions:
        columns += ["p.episode_id", "p.inputs", "p.outputs", "p.tags AS prediction_tags"]
    # The prediction found by its primary key's id and time: one day partition per row.
    join = (
        "LEFT JOIN feedbackflow.predictions p"
        " ON p.prediction_id = c.prediction_id AND p.ts = c.prediction_ts"
        if with_predictions or where.tags
        else ""
    )
    text = (
        f"SELECT {', '.join(columns)} FROM ({_CURRENT.format(before=before)}) c"
        f" {join} WHERE {after}"
    )
    if one_per_prediction:
        text = (
            f"SELECT DISTINCT ON (prediction_id) * FROM ({text}) f"
            " ORDER BY prediction_id, ts, feedback_id"
        )
    text = f"SELECT * FROM ({text}) r ORDER BY ts, feedback_id"
    if limit is not None:
        text += f" LIMIT {sql.param(limit)}"
    return text, sql.args


def _before(where: FeedbackFilter, sql: _Sql) -> str:
    """Conditions on a revision before the current one is chosen: its metric, its time."""
    before = ["true"]
    if where.metrics:
        before.append(f"metric = ANY({sql.param(list(where.metrics))}::text[])")
    if where.as_of is not None:
        before.append(f"ts <= {sql.param(where.as_of)}")
    return " AND ".join(before)


# A current value that is a retraction (wire ``retracted``: no value, no error) withdrew what it
# revised: nothing to export (the view feedback_current says the same).
HAS_OUTCOME = (
    "(c.value_bool IS NOT NULL OR c.value_float IS NOT NULL OR c.value_text IS NOT NULL"
    " OR c.value_json IS NOT NULL OR c.error_code IS NOT NULL)"
)


def _after(where: FeedbackFilter, sql: _Sql) -> str:
    """Conditions on the current values (``c``) and their predictions (``p``)."""
    after = [HAS_OUTCOME]
    for column, values in (
        ("application", where.applications),
        ("model", where.models),
        ("status", where.statuses),
        ("source_type", where.source_types),
        ("source_id", where.source_ids),
    ):
        if values:
            after.append(f"c.{column} = ANY({sql.param(list(values))}::text[])")
    if where.since is not None:
        after.append(f"c.ts >= {sql.param(where.since)}")
    if where.until is not None:
        after.append(f"c.ts < {sql.param(where.until)}")
    if where.positive_only:
        after.append("c.value_bool")
    if where.tags:
        tags = sql.param(json.dumps(where.tags))
        after.append(f"(c.tags @> {tags}::jsonb OR p.tags @> {tags}::jsonb)")
    return " AND ".join(after)


async def current_feedback(
    conn: asyncpg.Connection,
    where: FeedbackFilter,
    with_predictions: bool = False,
    limit: int | None = None,
    one_per_prediction: bool = False,
) -> AsyncIterator[dict[str, Any]]:
    """The rows as dicts, jsonb columns parsed; ``conn`` must not be in a transaction."""
    text, args = current_feedback_sql(where, with_predictions, limit, one_per_prediction)
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        async for record in conn.cursor(text, *args, prefetch=CURSOR_PREFETCH):
            row = dict(record)
            for name in _JSON_COLUMNS & row.keys():
                if row[name] is not None:
                    row[name] = json.loads(row[name])
            yield row
