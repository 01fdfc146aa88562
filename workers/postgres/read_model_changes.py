"""What the window's statements note of the feedback rows they change, for the read model
(``workers.postgres.read_model_sql`` applies it): a CTE over their RETURNING that copies each
changed row, as it is after the change, into the session's work tables ``read_model_changes``
(new feedback) and ``read_model_resolved`` (feedback stored pending before).
Kept apart so that the join's and the selectors' SQL depend on this alone."""

from __future__ import annotations

# What the rollups need of a feedback row.
CHANGE_COLUMNS = (
    "feedback_id",
    "join_key",
    "ts",
    "metric",
    "metric_type",
    "target_kind",
    "value_bool",
    "value_float",
    "value_text",
    "value_json",
    "error_code",
    "source_type",
    "source_id",
    "status",
    "application",
    "model",
    "prediction_id",
    "prediction_ts",
    "delay_seconds",
)
RETURNED = ", ".join(CHANGE_COLUMNS)
# What the work table keeps of them: whether there is an error, and whether the row is a
# retraction (no value and no error), rather than the error and the JSON value themselves.
NOTED_COLUMNS = tuple(
    {"value_json": "has_error", "error_code": "retracted"}.get(c, c) for c in CHANGE_COLUMNS
)


def noted_values(alias: str = "", status: str | None = None) -> str:
    """NOTED_COLUMNS computed from a feedback row ``alias`` (its status replaced by ``status``,
    an SQL expression, when given)."""
    a = f"{alias}." if alias else ""
    retraction = " AND ".join(
        f"{a}{c} IS NULL"
        for c in ("value_bool", "value_float", "value_text", "value_json", "error_code")
    )
    computed = {"has_error": f"{a}error_code IS NOT NULL", "retracted": retraction}
    if status is not None:
        computed["status"] = status
    return ", ".join(computed.get(c, f"{a}{c}") for c in NOTED_COLUMNS)


def note_changes(rows: str, was_pending: bool) -> str:
    """A CTE body noting ``rows`` (a CTE returning CHANGE_COLUMNS) as changed feedback: in
    ``read_model_resolved`` when they were stored pending before, else in ``read_model_changes``
    (new)."""
    table = "read_model_resolved" if was_pending else "read_model_changes"
    return f"INSERT INTO {table} ({', '.join(NOTED_COLUMNS)}) SELECT {noted_values()} FROM {rows}"
