"""What the window's statements note of the feedback rows they change, for the read model
(``workers.postgres.read_model_sql`` applies it): a CTE over their RETURNING that copies each
changed row, as it is after the change, into the session's work table ``read_model_changes``.
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


def note_changes(rows: str, was_pending: bool) -> str:
    """A CTE body noting ``rows`` (a CTE returning CHANGE_COLUMNS) as changed feedback:
    ``was_pending`` when they were stored pending before, else new."""
    return (
        f"INSERT INTO read_model_changes (was_pending, {RETURNED})"
        f" SELECT {'true' if was_pending else 'false'}, {RETURNED} FROM {rows}"
    )
