"""The read model's side of a window's transaction: notes of what the window changes, appended
set-based as its statements run; and the statement that folds the notes into the rollups,
which the worker's applier runs after the window commits (``read_model_applier``).

The window's statements that change feedback rows note each one in
``feedbackflow.read_model_queue`` (a CTE over their RETURNING,
``read_model_changes.note_changes``): new feedback (INSERT_FEEDBACK, the selectors'
expansion), queued feedback resolved (RESOLVE_QUEUED) and expired (NOTE_EXPIRY, just before
EXPIRE_UNMATCHED).  New predictions are counted per bucket for coverage
(NOTE_PREDICTIONS).  ``feedbackflow.read_model_apply_queue()`` (migration 0008) takes
every committed note and hands the rows to ``read_model_apply_changes()`` (migration 0006),
which turns them into grouped deltas: what a
revision supersedes leaves, what it brings comes in, through the revision heads.  Why the
window only notes, and what that saves it: docs/architecture.md, "Read model"; figures in
docs/performance.md.
"""

from __future__ import annotations

from workers.postgres import join_sql

# The window's new predictions counted per five-minute bucket, application and model ($1-$4:
# the buckets' starts, applications, models and counts), as the sink counts them from the window
# it holds (read_model_changes.predictions_per_bucket) when every staged prediction was inserted:
# counting them in SQL from the insert's RETURNING cost the window more (docs/performance.md).
NOTE_PREDICTIONS = """
INSERT INTO feedbackflow.read_model_queue_coverage (ts, application, model, predictions)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[])
"""

# When some were stored before (a replayed window): those this transaction inserted, counted
# in SQL ($1, $2: the window's prediction time bounds, widened).  The sink's transaction has no
# savepoint, so a row it inserted carries its transaction id.
NOTE_PREDICTIONS_INSERTED = f"""
INSERT INTO feedbackflow.read_model_queue_coverage (ts, application, model, predictions)
SELECT feedbackflow.read_model_bucket('5m', p.ts), p.application, p.model, count(*)
FROM {join_sql.STAGED_PREDICTIONS} s
JOIN feedbackflow.predictions p ON p.prediction_id = s.prediction_id AND p.ts = s.ts
WHERE p.ts >= $1 AND p.ts <= $2 AND p.xmin = pg_current_xact_id()::xid
GROUP BY 1, 2, 3
"""

# $1: oldest event time still within retention.  The queued feedback EXPIRE_UNMATCHED is about
# to expire, noted (run under the resolution lock, so nothing resolves it between).
NOTE_EXPIRY = """
INSERT INTO feedbackflow.read_model_queue (kind, feedback_id, join_key, ts)
SELECT 'r', q.feedback_id, q.join_key, q.ts
FROM feedbackflow.pending_feedback q
JOIN feedbackflow.feedback f
  ON f.feedback_id = q.feedback_id AND f.join_key = q.join_key AND f.ts = q.ts AND f.ts < $1
WHERE q.ts < $1 AND f.status = 'pending'
"""

# Every committed note folded into the rollups, in a transaction of its own (one applier at a
# time); returns how many notes it took (0: the read model was up to date).
APPLY_QUEUE = "SELECT feedbackflow.read_model_apply_queue()"

# The notes' tables are emptied by every apply: without a vacuum (autovacuum may be off, as on
# this project's test server) their dead rows would pile up and every apply would read them.
VACUUM_QUEUE = "VACUUM feedbackflow.read_model_queue, feedbackflow.read_model_queue_coverage"

# Notes not applied yet (0: the read model reflects every committed window).
NOTES_WAITING = """
SELECT (SELECT count(*) FROM feedbackflow.read_model_queue)
     + (SELECT count(*) FROM feedbackflow.read_model_queue_coverage)
"""

# Everything recomputed from feedback and predictions (`feedbackflow read-model rebuild`).
REBUILD = "SELECT feedbackflow.read_model_rebuild()"

# $1: the first time retention keeps (the start of the oldest day partition it keeps).
TRIM = "SELECT feedbackflow.read_model_trim($1)"
