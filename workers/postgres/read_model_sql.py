"""The read model's side of a window's transaction: what the window changes, noted set-based as
its statements run, then applied to the rollups in one call.

The window's statements that change feedback rows note each row as it is after the change in
the session's work tables (a CTE over their RETURNING, ``read_model_changes.note_changes``):
new feedback (INSERT_FEEDBACK, the selectors' expansion), queued feedback resolved
(RESOLVE_QUEUED) and expired (NOTE_EXPIRY, just before EXPIRE_UNMATCHED).  New predictions are
noted for coverage (INSERT_PREDICTIONS_NOTED).  ``feedbackflow.read_model_apply_changes()``
(migration 0006) then turns them into grouped deltas: what a revision supersedes leaves, what it
brings comes in, through the revision heads.  Its cost follows the window, not the size of the
buckets it touches (docs/architecture.md, "Read model"; figures in docs/performance.md).
"""

from __future__ import annotations

from workers.postgres import join_sql
from workers.postgres.read_model_changes import NOTED_COLUMNS, noted_values

# Once per connection, with the staging tables.
CREATE_WORK_TABLES = "SELECT feedbackflow.read_model_work_tables();"


# The window's predictions, inserted and noted for coverage per five-minute bucket; the
# statement returns how many it inserted.
INSERT_PREDICTIONS_NOTED = f"""
WITH inserted AS ({join_sql.INSERT_PREDICTIONS.strip()}
    RETURNING ts, application, model
), noted AS (
    INSERT INTO read_model_coverage (ts, application, model, predictions, with_feedback)
    SELECT feedbackflow.read_model_bucket('5m', ts), application, model, count(*), 0
    FROM inserted GROUP BY 1, 2, 3
)
SELECT count(*) FROM inserted
"""

# $1: oldest event time still within retention.  The queued feedback EXPIRE_UNMATCHED is about
# to expire, noted as it will be (run under the resolution lock, so nothing resolves it between).
NOTE_EXPIRY = f"""
INSERT INTO read_model_resolved ({", ".join(NOTED_COLUMNS)})
SELECT {noted_values("f", status="'expired'")}
FROM feedbackflow.pending_feedback q
JOIN feedbackflow.feedback f
  ON f.feedback_id = q.feedback_id AND f.join_key = q.join_key AND f.ts = q.ts AND f.ts < $1
WHERE q.ts < $1 AND f.status = 'pending'
"""

APPLY_CHANGES = "SELECT feedbackflow.read_model_apply_changes()"

# Everything recomputed from feedback and predictions (`feedbackflow read-model rebuild`).
REBUILD = "SELECT feedbackflow.read_model_rebuild()"

# $1: the first time retention keeps (the start of the oldest day partition it keeps).
TRIM = "SELECT feedbackflow.read_model_trim($1)"
