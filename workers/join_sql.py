"""The join semantics, as the set-based SQL one window runs in one transaction.

Order inside the transaction (``PostgresSink.write``):

1. COPY the window into per-connection staging tables (``ON COMMIT DELETE ROWS``).
2. Insert predictions, then feedback (as *pending*).  Both are idempotent on their id: a replayed
   window, or the same event sent three times, inserts nothing new.  The feedback actually
   inserted become this window's *candidates*.
3. Take the resolution lock (one worker at a time from here to commit), and add to the
   candidates the queued pending feedback whose target is among this window's predictions.
4. Resolve every candidate with one look-up chosen by its target: *joined* when its prediction
   is stored, *expired* (``prediction_past_retention``) when the feedback came more than the
   retention after it, or when its UUIDv7 target says so and retention already dropped it.
5. Expire queued feedback older than the retention (``no_prediction_within_retention``).
6. Resolved entries leave the queue; new candidates still unresolved join it.
7. Insert dead letters (idempotent on topic, partition, offset).

Every statement is bounded by the window (index look-ups per staged row, on two or three day
partitions where an event's time or a UUIDv7 id says where to look) or by the pending queue,
never by the stored history.
"""

from __future__ import annotations

from workers.decode import DeadLetter, FeedbackRow, PredictionRow

PREDICTION_COLUMNS = PredictionRow._fields
FEEDBACK_COLUMNS = FeedbackRow._fields
DEAD_LETTER_COLUMNS = DeadLetter._fields
TARGET_COLUMNS = ("target_prediction_id", "target_join_key", "target_episode_id", "target_id_time")

# Stable codes: dashboards group by them.
PREDICTION_PAST_RETENTION = "prediction_past_retention"
NO_PREDICTION_WITHIN_RETENTION = "no_prediction_within_retention"


def _cols(columns: tuple[str, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + c for c in columns)


def _same_feedback(a: str, b: str) -> str:
    """Equality on the feedback key, so that the feedback table is reached by its primary key."""
    return f"{a}.feedback_id = {b}.feedback_id AND {a}.join_key = {b}.join_key AND {a}.ts = {b}.ts"


# Each window's statements are planned with its own bounds: a generic plan of a prepared
# statement cannot prune partitions by them and was measured 25x slower (docs/performance.md).
CREATE_STAGING = f"""
SET plan_cache_mode = force_custom_plan;
CREATE TEMP TABLE IF NOT EXISTS stage_predictions
    ON COMMIT DELETE ROWS AS
    SELECT {_cols(PREDICTION_COLUMNS)} FROM feedbackflow.predictions WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_feedback
    ON COMMIT DELETE ROWS AS
    SELECT {_cols(FEEDBACK_COLUMNS)} FROM feedbackflow.feedback WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_dead_letters
    ON COMMIT DELETE ROWS AS
    SELECT {_cols(DEAD_LETTER_COLUMNS)} FROM feedbackflow.dead_letters WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_candidates
    ON COMMIT DELETE ROWS AS
    SELECT *, false AS queued FROM feedbackflow.pending_feedback WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_resolved
    (feedback_id uuid, join_key text, ts timestamptz, status text, queued boolean)
    ON COMMIT DELETE ROWS;
CREATE INDEX IF NOT EXISTS stage_candidates_key ON stage_candidates (feedback_id);
CREATE INDEX IF NOT EXISTS stage_resolved_key ON stage_resolved (feedback_id);
"""

# Ids are idempotency keys.  A replay carries the same event time, and a producer's retry a
# close one, so the look-up for an earlier copy is bounded to a day either side of the event's
# time.  Every statement below that reaches a partitioned table by key also takes constant time
# bounds ($-parameters computed from the window), so the planner prunes to the two or three day
# partitions the window touches before it chooses a join.  Without them it either hashes every
# partition (the whole history, once per window) or probes all ~90 per row (run-time pruning
# of a 90-way Append costs ~0.3 ms per row, 300x the index probe; docs/performance.md).
DEDUPE_SPAN = "interval '1 day'"
_TARGET = _cols(TARGET_COLUMNS)
_QUEUED_TARGET = _cols(TARGET_COLUMNS, "q")

# $1, $2: the window's earliest and latest event time, widened by DEDUPE_SPAN.
INSERT_PREDICTIONS = f"""
INSERT INTO feedbackflow.predictions ({_cols(PREDICTION_COLUMNS)})
SELECT {_cols(PREDICTION_COLUMNS, "s")} FROM stage_predictions s
WHERE NOT EXISTS (
    SELECT 1 FROM feedbackflow.predictions p
    WHERE p.prediction_id = s.prediction_id AND p.ts >= $1 AND p.ts <= $2
      AND p.ts >= s.ts - {DEDUPE_SPAN} AND p.ts <= s.ts + {DEDUPE_SPAN})
ON CONFLICT DO NOTHING
"""

# $1, $2: as for INSERT_PREDICTIONS.
INSERT_FEEDBACK = f"""
WITH inserted AS (
    INSERT INTO feedbackflow.feedback ({_cols(FEEDBACK_COLUMNS)})
    SELECT {_cols(FEEDBACK_COLUMNS, "s")} FROM stage_feedback s
    WHERE NOT EXISTS (
        SELECT 1 FROM feedbackflow.feedback f
        WHERE f.feedback_id = s.feedback_id AND f.ts >= $1 AND f.ts <= $2
          AND f.ts >= s.ts - {DEDUPE_SPAN} AND f.ts <= s.ts + {DEDUPE_SPAN})
    ON CONFLICT DO NOTHING
    RETURNING feedback_id, join_key, ts, {_TARGET}
)
INSERT INTO stage_candidates (feedback_id, join_key, ts, {_TARGET}, queued)
SELECT feedback_id, join_key, ts, {_TARGET}, false FROM inserted
"""

# Resolution is serialised across workers by a transaction-scoped lock, taken after the inserts.
# A feedback and its prediction written by two workers at once would otherwise miss each other
# (under READ COMMITTED neither sees the other's uncommitted row); with the lock, whichever
# resolves second starts its statements after the first has committed, and sees its rows.
RESOLUTION_LOCK = "SELECT pg_advisory_xact_lock(4627188117730549063)"

GATHER_QUEUED = f"""
INSERT INTO stage_candidates (feedback_id, join_key, ts, {_TARGET}, queued)
SELECT q.feedback_id, q.join_key, q.ts, {_QUEUED_TARGET}, true
FROM feedbackflow.pending_feedback q JOIN stage_predictions s
    ON q.target_prediction_id = s.prediction_id
UNION
SELECT q.feedback_id, q.join_key, q.ts, {_QUEUED_TARGET}, true
FROM feedbackflow.pending_feedback q JOIN stage_predictions s ON q.target_join_key = s.join_key
UNION
SELECT q.feedback_id, q.join_key, q.ts, {_QUEUED_TARGET}, true
FROM feedbackflow.pending_feedback q JOIN stage_predictions s
    ON q.target_episode_id = s.episode_id
"""

_PREDICTION = "SELECT p.prediction_id, p.application, p.model, p.ts FROM feedbackflow.predictions p"

# Rows inserted in this transaction are in no statistics, so the planner can think one side of a
# join holds a single row and loop over the other.  The staging tables that can land on the
# inner side get an index (a mis-estimated nested loop then probes instead of rescanning:
# measured 40x slower windows without), and the candidates, built by SQL, their real size.
ANALYZE_CANDIDATES = "ANALYZE stage_candidates"

CANDIDATE_BOUNDS = """
SELECT min(ts) AS ts_min, max(ts) AS ts_max,
       min(target_id_time) AS id_time_min, max(target_id_time) AS id_time_max
FROM stage_candidates
"""

# $1: retention (interval), $2: now, $3/$4: the candidates' earliest and latest time, $5/$6: the
# earliest and latest time their UUIDv7 targets carry, widened by DEDUPE_SPAN.
# One look-up per candidate, chosen by its target: the conditions on ``c`` alone are one-time
# filters, so the other branches never touch the predictions table.  A UUIDv7 target is looked
# up only in the partitions around the time its id carries (decoding holds predictions to that:
# a UUIDv7 id more than DEDUPE_SPAN from its timestamp is a dead letter); other ids, join keys
# and episodes search every partition.  A join key names its latest prediction; an episode is
# represented by its first prediction (the view episode_feedback_predictions lists them all).
# A new feedback whose prediction is not stored but whose UUIDv7 target is older than the
# retention is expired now: retention already dropped that prediction.
RESOLVE_CANDIDATES = f"""
WITH found AS (
    SELECT c.feedback_id, c.join_key, c.ts, c.queued, m.prediction_id, m.application, m.model,
           m.ts AS prediction_ts,
           CASE WHEN m.ts IS NOT NULL AND c.ts - m.ts > $1::interval THEN 'expired'
                WHEN m.ts IS NOT NULL THEN 'joined'
                WHEN NOT c.queued AND c.target_id_time < c.ts - $1::interval THEN 'expired'
           END AS status
    FROM stage_candidates c
    LEFT JOIN LATERAL (
        ({_PREDICTION}
         WHERE c.target_id_time IS NOT NULL AND p.prediction_id = c.target_prediction_id
           AND p.ts >= $5 AND p.ts <= $6
           AND p.ts >= c.target_id_time - {DEDUPE_SPAN}
           AND p.ts <= c.target_id_time + {DEDUPE_SPAN}
         LIMIT 1)
        UNION ALL
        ({_PREDICTION}
         WHERE c.target_id_time IS NULL AND c.target_prediction_id IS NOT NULL
           AND p.prediction_id = c.target_prediction_id
         LIMIT 1)
        UNION ALL
        ({_PREDICTION}
         WHERE c.target_join_key IS NOT NULL AND p.join_key = c.target_join_key
         ORDER BY p.ts DESC LIMIT 1)
        UNION ALL
        (SELECT NULL::uuid, p.application, p.model, p.ts FROM feedbackflow.predictions p
         WHERE c.target_episode_id IS NOT NULL AND p.episode_id = c.target_episode_id
         ORDER BY p.ts ASC LIMIT 1)
        LIMIT 1
    ) m ON true
), updated AS (
    UPDATE feedbackflow.feedback f SET
        status = found.status,
        status_reason = CASE WHEN found.status = 'expired' THEN '{PREDICTION_PAST_RETENTION}' END,
        prediction_id = found.prediction_id,
        application = found.application,
        model = found.model,
        prediction_ts = found.prediction_ts,
        delay_seconds = extract(epoch FROM f.ts - found.prediction_ts),
        resolved_at = $2::timestamptz
    FROM found
    WHERE found.status IS NOT NULL AND {_same_feedback("f", "found")} AND f.status = 'pending'
      AND f.ts >= $3 AND f.ts <= $4
    RETURNING f.feedback_id, f.join_key, f.ts, f.status, found.queued
)
INSERT INTO stage_resolved (feedback_id, join_key, ts, status, queued)
SELECT feedback_id, join_key, ts, status, queued FROM updated
RETURNING status, queued
"""

# Run only when RESOLVE_CANDIDATES resolved queued feedback.
DEQUEUE_RESOLVED = f"""
DELETE FROM feedbackflow.pending_feedback q USING stage_resolved r
WHERE r.queued AND {_same_feedback("q", "r")}
"""

ENQUEUE_UNRESOLVED = f"""
INSERT INTO feedbackflow.pending_feedback (feedback_id, join_key, ts, {_TARGET})
SELECT c.feedback_id, c.join_key, c.ts, {_cols(TARGET_COLUMNS, "c")} FROM stage_candidates c
WHERE NOT c.queued
  AND NOT EXISTS (SELECT 1 FROM stage_resolved r WHERE {_same_feedback("r", "c")})
ON CONFLICT DO NOTHING
"""

# $1: oldest event time still within retention, $2: now.
EXPIRE_UNMATCHED = f"""
WITH gone AS (
    DELETE FROM feedbackflow.pending_feedback WHERE ts < $1
    RETURNING feedback_id, join_key, ts
)
UPDATE feedbackflow.feedback f SET
    status = 'expired', status_reason = '{NO_PREDICTION_WITHIN_RETENTION}',
    resolved_at = $2::timestamptz
FROM gone
WHERE {_same_feedback("f", "gone")} AND f.status = 'pending' AND f.ts < $1
"""

INSERT_DEAD_LETTERS = f"""
INSERT INTO feedbackflow.dead_letters ({_cols(DEAD_LETTER_COLUMNS)})
SELECT {_cols(DEAD_LETTER_COLUMNS)} FROM stage_dead_letters
ON CONFLICT DO NOTHING
"""
