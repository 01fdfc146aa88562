"""The read model's side of a window's transaction: what the window changes, noted set-based as
its statements run, then applied to the rollups in one call.

The window's statements that change feedback rows note each row as it is after the change in
the session's work table ``read_model_changes`` (a CTE over their RETURNING, NOTE_CHANGES):
new feedback (INSERT_FEEDBACK, the selectors' expansion), queued feedback resolved
(RESOLVE_QUEUED) and expired (NOTE_EXPIRY, just before EXPIRE_UNMATCHED).  New predictions are
noted for coverage (INSERT_PREDICTIONS_NOTED).  ``feedbackflow.read_model_apply_changes()``
(migration 0006) then turns them into grouped deltas: what a revision supersedes leaves, what it
brings comes in, through the revision heads.  Its cost follows the window, not the size of the
buckets it touches (docs/architecture.md, "Read model"; figures in docs/performance.md).
"""

from __future__ import annotations

from workers.postgres import join_sql
from workers.postgres.read_model_changes import CHANGE_COLUMNS

# Once per connection, with the staging tables.
CREATE_WORK_TABLES = "SELECT feedbackflow.read_model_work_tables();"


# The window's predictions, inserted and noted for coverage: the statement's command tag stays
# INSERT with the number of predictions inserted.
INSERT_PREDICTIONS_NOTED = f"""
WITH inserted AS ({join_sql.INSERT_PREDICTIONS.strip()}
    RETURNING ts, application, model)
INSERT INTO read_model_coverage (ts, application, model, predictions, with_feedback)
SELECT ts, application, model, 1, 0 FROM inserted
"""

# $1: oldest event time still within retention.  The queued feedback EXPIRE_UNMATCHED is about
# to expire, noted as it will be (run under the resolution lock, so nothing resolves it between).
NOTE_EXPIRY = f"""
INSERT INTO read_model_changes (was_pending, {join_sql.cols(CHANGE_COLUMNS)})
SELECT true, {
    join_sql.cols(tuple("'expired'" if c == "status" else f"f.{c}" for c in CHANGE_COLUMNS))
}
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
