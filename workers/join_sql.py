"""The join semantics, as the set-based SQL one window runs in one transaction.

Order inside the transaction (``PostgresSink.write``):

1. COPY the window into per-connection staging tables (``ON COMMIT DELETE ROWS``).
2. Insert predictions, then feedback as *pending*.  Both are idempotent on their id: a replayed
   window, or the same event sent three times, inserts nothing new.
3. Take the resolution lock (one worker at a time from here to commit), then gather the
   *candidates*: pending feedback that this window could resolve -- the window's own feedback
   and older pending feedback whose prediction is in this window.
4. Resolve each candidate against the stored predictions: *joined* when found within retention,
   *expired* (``prediction_past_retention``) when the feedback came more than the retention after
   its prediction, or when its UUIDv7 target is older than that and the prediction is gone.
5. Expire pending feedback older than the retention (``no_prediction_within_retention``).
6. Insert dead letters (idempotent on topic, partition, offset).

Every statement is bounded by the window (index look-ups per staged row, on two or three day
partitions where the event's time or a UUIDv7 id says where to look) or by the pending set
(partial indexes), never by the joined history.
"""

from __future__ import annotations

from workers.decode import DeadLetter, FeedbackRow, PredictionRow

PREDICTION_COLUMNS = PredictionRow._fields
FEEDBACK_COLUMNS = FeedbackRow._fields
DEAD_LETTER_COLUMNS = DeadLetter._fields

# Stable codes: dashboards group by them.
PREDICTION_PAST_RETENTION = "prediction_past_retention"
NO_PREDICTION_WITHIN_RETENTION = "no_prediction_within_retention"


def _cols(columns: tuple[str, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + c for c in columns)


CREATE_STAGING = f"""
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
    (feedback_id uuid, join_key text, ts timestamptz) ON COMMIT DELETE ROWS;
"""

# Ids are idempotency keys.  A replay carries the same event time, and a producer's retry a
# close one, so the look-up for an earlier copy is bounded to a day either side of the event's
# time: the partitions probed stay two or three however long the history.
DEDUPE_SPAN = "interval '1 day'"

INSERT_PREDICTIONS = f"""
INSERT INTO feedbackflow.predictions ({_cols(PREDICTION_COLUMNS)})
SELECT {_cols(PREDICTION_COLUMNS, "s")} FROM stage_predictions s
WHERE NOT EXISTS (
    SELECT 1 FROM feedbackflow.predictions p
    WHERE p.prediction_id = s.prediction_id
      AND p.ts >= s.ts - {DEDUPE_SPAN} AND p.ts <= s.ts + {DEDUPE_SPAN})
ON CONFLICT DO NOTHING
"""

INSERT_FEEDBACK = f"""
INSERT INTO feedbackflow.feedback ({_cols(FEEDBACK_COLUMNS)})
SELECT {_cols(FEEDBACK_COLUMNS, "s")} FROM stage_feedback s
WHERE NOT EXISTS (
    SELECT 1 FROM feedbackflow.feedback f
    WHERE f.feedback_id = s.feedback_id
      AND f.ts >= s.ts - {DEDUPE_SPAN} AND f.ts <= s.ts + {DEDUPE_SPAN})
ON CONFLICT DO NOTHING
"""

# Resolution is serialised across workers by a transaction-scoped lock, taken after the inserts.
# A feedback and its prediction written by two workers at once would otherwise miss each other
# (under READ COMMITTED neither sees the other's uncommitted row); with the lock, whichever
# resolves second starts its statements after the first has committed, and sees its rows.
RESOLUTION_LOCK = "SELECT pg_advisory_xact_lock(4627188117730549063)"

GATHER_CANDIDATES = """
INSERT INTO stage_candidates (feedback_id, join_key, ts)
SELECT feedback_id, join_key, ts FROM stage_feedback
UNION
SELECT f.feedback_id, f.join_key, f.ts FROM feedbackflow.feedback f
    JOIN stage_predictions s ON f.target_prediction_id = s.prediction_id
    WHERE f.status = 'pending'
UNION
SELECT f.feedback_id, f.join_key, f.ts FROM feedbackflow.feedback f
    JOIN stage_predictions s ON f.target_join_key = s.join_key
    WHERE f.status = 'pending'
UNION
SELECT f.feedback_id, f.join_key, f.ts FROM feedbackflow.feedback f
    JOIN stage_predictions s ON f.target_episode_id = s.episode_id
    WHERE f.status = 'pending'
"""

_PREDICTION = "SELECT p.prediction_id, p.application, p.model, p.ts FROM feedbackflow.predictions p"

# $1: retention (interval), $2: now.
# One look-up per candidate, chosen by its target: the conditions on ``f`` alone are one-time
# filters, so the other branches never touch the predictions table.  A UUIDv7 target is looked
# up first in the partitions around the time its id carries; only if that misses are all
# partitions searched.  A join key names its latest prediction; an episode is represented by its
# first prediction (the view episode_feedback_predictions lists them all).
RESOLVE_CANDIDATES = f"""
WITH found AS (
    SELECT f.feedback_id, f.join_key, f.ts,
           m.prediction_id, m.application, m.model, m.ts AS prediction_ts
    FROM stage_candidates c
    JOIN feedbackflow.feedback f
      ON f.feedback_id = c.feedback_id AND f.join_key = c.join_key AND f.ts = c.ts
    CROSS JOIN LATERAL (
        ({_PREDICTION}
         WHERE f.target_id_time IS NOT NULL AND p.prediction_id = f.target_prediction_id
           AND p.ts >= f.target_id_time - {DEDUPE_SPAN}
           AND p.ts <= f.target_id_time + {DEDUPE_SPAN}
         LIMIT 1)
        UNION ALL
        ({_PREDICTION}
         WHERE f.target_prediction_id IS NOT NULL AND p.prediction_id = f.target_prediction_id
         LIMIT 1)
        UNION ALL
        ({_PREDICTION}
         WHERE f.target_join_key IS NOT NULL AND p.join_key = f.target_join_key
         ORDER BY p.ts DESC LIMIT 1)
        UNION ALL
        (SELECT NULL::uuid, p.application, p.model, p.ts FROM feedbackflow.predictions p
         WHERE f.target_episode_id IS NOT NULL AND p.episode_id = f.target_episode_id
         ORDER BY p.ts ASC LIMIT 1)
        LIMIT 1
    ) m
    WHERE f.status = 'pending'
)
UPDATE feedbackflow.feedback f SET
    status = CASE WHEN f.ts - found.prediction_ts > $1::interval THEN 'expired' ELSE 'joined' END,
    status_reason = CASE WHEN f.ts - found.prediction_ts > $1::interval
                         THEN '{PREDICTION_PAST_RETENTION}' END,
    prediction_id = found.prediction_id,
    application = found.application,
    model = found.model,
    prediction_ts = found.prediction_ts,
    delay_seconds = extract(epoch FROM f.ts - found.prediction_ts),
    resolved_at = $2::timestamptz
FROM found
WHERE f.feedback_id = found.feedback_id AND f.join_key = found.join_key AND f.ts = found.ts
RETURNING f.status
"""

# $1: retention, $2: now.  The prediction is gone (retention dropped it) but its UUIDv7 id says
# it was older than the retention when the feedback was given.
EXPIRE_PAST_RETENTION_BY_ID_TIME = f"""
UPDATE feedbackflow.feedback f SET
    status = 'expired', status_reason = '{PREDICTION_PAST_RETENTION}', resolved_at = $2::timestamptz
FROM stage_candidates c
WHERE f.feedback_id = c.feedback_id AND f.join_key = c.join_key AND f.ts = c.ts
  AND f.status = 'pending' AND f.target_id_time < f.ts - $1::interval
"""

# $1: oldest event time still within retention, $2: now.
EXPIRE_UNMATCHED = f"""
UPDATE feedbackflow.feedback SET
    status = 'expired', status_reason = '{NO_PREDICTION_WITHIN_RETENTION}',
    resolved_at = $2::timestamptz
WHERE status = 'pending' AND ts < $1
"""

INSERT_DEAD_LETTERS = f"""
INSERT INTO feedbackflow.dead_letters ({_cols(DEAD_LETTER_COLUMNS)})
SELECT {_cols(DEAD_LETTER_COLUMNS)} FROM stage_dead_letters
ON CONFLICT DO NOTHING
"""
