"""What a window notes for the read model.  Of the feedback rows its statements change: a CTE
over their RETURNING that appends one narrow note per changed row to the durable queue
``feedbackflow.read_model_queue`` (migration 0008), which the worker's applier folds into the
rollups after the window commits (``workers.postgres.read_model_applier``).

A note is the row's primary key and what happened to it ('p' inserted pending, 'n' inserted
resolved, 'r' resolved or expired after being stored pending), not a copy of the row: only a
pending row ever changes again, so the applier reads every other row as it is.  Of its new
predictions: how many per five-minute bucket, application and model (coverage's denominator).
Kept apart so that the join's and the selectors' SQL depend on this alone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from operator import floordiv, itemgetter

from workers.stream.decode import PredictionRow, as_time

# What a note needs of a changed feedback row: its key, and its status for a new one.
CHANGE_COLUMNS = ("feedback_id", "join_key", "ts", "status")
RETURNED = ", ".join(CHANGE_COLUMNS)

# Five minutes in micros: a bucket's start is its time less the remainder (date_bin's origin,
# 2000-01-01, is a multiple of five minutes from the Unix epoch: read_model_bucket).
_BUCKET_US = 300_000_000
_TS, _APPLICATION, _MODEL = (
    itemgetter(PredictionRow._fields.index(name)) for name in ("ts", "application", "model")
)


def note_changes(rows: str, was_pending: bool) -> str:
    """A CTE body noting ``rows`` (a CTE returning CHANGE_COLUMNS) as changed feedback: 'r' when
    they were stored pending before, else 'p' or 'n' by their status (new)."""
    kind = "'r'" if was_pending else "CASE WHEN status = 'pending' THEN 'p' ELSE 'n' END"
    return (
        "INSERT INTO feedbackflow.read_model_queue (kind, feedback_id, join_key, ts) "
        f"SELECT {kind}, feedback_id, join_key, ts FROM {rows}"
    )


def predictions_per_bucket(
    predictions: Sequence[PredictionRow],
) -> tuple[list[datetime], list[str], list[str | None], list[int]]:
    """The window's predictions counted per five-minute bucket, application and model: the
    arrays read_model_sql.NOTE_PREDICTIONS takes."""
    # Iterated in C (map, zip and Counter's counting loop): a generator over the rows took
    # twice as long.
    counts = Counter(
        zip(
            map(floordiv, map(_TS, predictions), repeat(_BUCKET_US)),
            map(_APPLICATION, predictions),
            map(_MODEL, predictions),
            strict=True,
        )
    )
    return (
        [as_time(bucket * _BUCKET_US) for bucket, _, _ in counts],
        [application for _, application, _ in counts],
        [model for _, _, model in counts],
        list(counts.values()),
    )
