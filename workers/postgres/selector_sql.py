"""Tag selectors, as the set-based SQL a window runs (``workers.postgres.selectors``).

A tag-selector feedback names every prediction carrying some tags.  It is resolved once, in the
window that brings it: it matches the predictions stored by then (this window's included) whose
tags hold every item, within the retention before its time, and becomes one ordinary feedback
per match, joined (id derived from the selector's id and the prediction's, so the expansion is
the same on any replay).  A selector that matches nothing stays pending; each later window's
predictions are matched against the pending selectors, and a selector past the retention is
expired.  Once joined, its set of matches is fixed: a prediction written later does not join it.

Look-ups go through ``prediction_tags`` (the tags of selectable keys), one index probe per
partition for the selector's probe tag, then the predictions' primary key: never a read of every
prediction.
"""

from __future__ import annotations

from workers import time_spans
from workers.postgres.join_sql import (
    NO_PREDICTION_WITHIN_RETENTION,
    STAGED_PREDICTIONS,
    as_stored,
    cols,
    staged,
)
from workers.postgres.read_model_changes import RETURNED, note_changes
from workers.stream.decode import SelectorRow
from workers.time_spans import sql_interval

SELECTOR_COLUMNS = SelectorRow._fields
DEDUPE_SPAN = sql_interval(time_spans.DEDUPE_SPAN)

CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS stage_selectors
    ON COMMIT DELETE ROWS AS
    SELECT {staged(SELECTOR_COLUMNS)} FROM feedbackflow.selector_feedback WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_selected (feedback_id uuid, ts timestamptz)
    ON COMMIT DELETE ROWS;
"""

# $1: the selectable keys.  A window's predictions' tags of those keys, as `key` and `key=value`.
INDEX_PREDICTION_TAGS = f"""
INSERT INTO feedbackflow.prediction_tags (tag, ts, prediction_id)
SELECT t.tag, s.ts, s.prediction_id
FROM {STAGED_PREDICTIONS} s
CROSS JOIN LATERAL jsonb_each_text(s.tags) e
CROSS JOIN LATERAL (VALUES (e.key), (e.key || '=' || e.value)) t (tag)
WHERE e.key = ANY($1::text[])
ON CONFLICT DO NOTHING
"""

# $1, $2: the window's earliest and latest selector time, widened by DEDUPE_SPAN.  Idempotent on
# the id (a replay, or a retry whose time moved a little, inserts nothing); what it inserts is
# noted in stage_selected, for RESOLVE_NEW.
INSERT_SELECTORS = f"""
WITH inserted AS (
    INSERT INTO feedbackflow.selector_feedback ({cols(SELECTOR_COLUMNS)})
    SELECT s.* FROM (SELECT {as_stored(SELECTOR_COLUMNS, {})} FROM stage_selectors) s
    LEFT JOIN LATERAL (
        SELECT 1 AS found FROM feedbackflow.selector_feedback f
        WHERE f.feedback_id = s.feedback_id AND f.ts >= $1 AND f.ts <= $2
          AND f.ts >= s.ts - {DEDUPE_SPAN} AND f.ts <= s.ts + {DEDUPE_SPAN}
        LIMIT 1) earlier ON true
    WHERE earlier.found IS NULL
    RETURNING feedback_id, ts
)
INSERT INTO stage_selected SELECT feedback_id, ts FROM inserted
"""

# The selector's value columns, copied onto each feedback it becomes.
_VALUES = (
    "metric",
    "metric_type",
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
    "ingested_at",
)


def _expand(matches: str) -> str:
    """Statements that turn ``matches`` (a query of selector feedback_id, ts and the matched
    prediction's prediction_id, application, model, prediction_ts) into joined feedback and
    mark the selectors joined.  $1: now, $2/$3: the selectors' earliest and latest time."""
    return f"""
WITH matches AS ({matches}),
selectors AS (
    SELECT q.* FROM feedbackflow.selector_feedback q
    JOIN (SELECT DISTINCT feedback_id, ts FROM matches) m USING (feedback_id, ts)
    WHERE q.ts >= $2 AND q.ts <= $3 AND q.status = 'pending'
),
expanded AS (
    INSERT INTO feedbackflow.feedback (
        feedback_id, join_key, ts, target_kind, target_prediction_id, {cols(_VALUES)},
        metadata, status, prediction_id, application, model, prediction_ts, delay_seconds,
        resolved_at)
    SELECT md5(q.feedback_id::text || m.prediction_id::text)::uuid, m.prediction_id::text,
           q.ts, 'prediction_id', m.prediction_id, {cols(_VALUES, "q")},
           q.metadata || jsonb_build_object('feedbackflow.selector_feedback_id',
                                            q.feedback_id::text),
           'joined', m.prediction_id, m.application, m.model, m.prediction_ts,
           extract(epoch FROM q.ts - m.prediction_ts), $1::timestamptz
    FROM matches m JOIN selectors q USING (feedback_id, ts)
    ON CONFLICT DO NOTHING
    RETURNING {RETURNED}
),
noted AS ({note_changes("expanded", was_pending=False)}),
marked AS (
    UPDATE feedbackflow.selector_feedback f SET
        status = 'joined',
        matched_prediction_ids = g.ids,
        resolved_at = $1::timestamptz
    FROM (SELECT m.feedback_id, m.ts,
                 array_agg(m.prediction_id ORDER BY m.prediction_ts, m.prediction_id) AS ids
          FROM matches m JOIN selectors q USING (feedback_id, ts)
          GROUP BY m.feedback_id, m.ts) g
    WHERE f.feedback_id = g.feedback_id AND f.ts = g.ts AND f.ts >= $2 AND f.ts <= $3
    RETURNING 1
)
SELECT (SELECT count(*) FROM expanded) AS feedback, (SELECT count(*) FROM marked) AS selectors
"""


_MATCHED = "p.prediction_id, p.application, p.model, p.ts AS prediction_ts"
_HOLDS = "p.tags @> q.pairs AND p.tags ?& q.keys"

# The window's new selectors against the predictions stored by now.  $4: retention.
RESOLVE_NEW = _expand(f"""
    SELECT q.feedback_id, q.ts, {_MATCHED}
    FROM stage_selected n
    JOIN feedbackflow.selector_feedback q
      ON q.feedback_id = n.feedback_id AND q.ts = n.ts AND q.ts >= $2 AND q.ts <= $3
    JOIN feedbackflow.prediction_tags t
      ON t.tag = q.probe_tag AND t.ts >= q.ts - $4::interval
    JOIN feedbackflow.predictions p ON p.prediction_id = t.prediction_id AND p.ts = t.ts
    WHERE {_HOLDS}
""")

# Pending selectors against this window's predictions.  $2/$3: the oldest selector still within
# retention and now (pending selectors are few: each is a request nothing has matched yet).
RESOLVE_PENDING = _expand(f"""
    SELECT q.feedback_id, q.ts, {_MATCHED}
    FROM feedbackflow.selector_feedback q
    JOIN {STAGED_PREDICTIONS} p ON {_HOLDS}
    WHERE q.status = 'pending' AND q.ts >= $2 AND q.ts <= $3
""")

# $1: the oldest time still within retention, $2: now.
EXPIRE_SELECTORS = f"""
UPDATE feedbackflow.selector_feedback SET
    status = 'expired', status_reason = '{NO_PREDICTION_WITHIN_RETENTION}',
    resolved_at = $2::timestamptz
WHERE status = 'pending' AND ts < $1
"""
