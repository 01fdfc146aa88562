"""The key directory: where a feedback's target key leads, in one index probe.

A UUIDv7 prediction id carries its time, so a feedback naming one is looked up in the two or
three day partitions around it.  Any other target -- a prediction id of another UUID version, a
join key (a service's own, an MLflow trace id, or by default the prediction id as text), an
episode -- says nothing about when its prediction was made, and looking it up in the predictions
themselves costs one index probe per day partition: ~90 with full retention.

``feedbackflow.prediction_keys`` (migration 0007) holds, for each such key, the prediction's id,
time, application and model: everything the join writes onto a feedback.  It is one table with
one B-tree, so a look-up is one probe whatever the history, and the predictions table is not
touched at all (join_sql's look-up branches read only the directory).  The rows are written in
the window's transaction right after the predictions they describe (``INSERT_KEYS``), so a
prediction is in the directory exactly when it is stored: a replayed window adds no key.
Retention deletes the rows of the days it drops (``TRIM``).  docs/architecture.md, "The key
directory"; the figures are in docs/performance.md.
"""

from __future__ import annotations

from workers.postgres.join_sql import STATEMENT_NAME, time_of

# The kinds of key (migration 0007).  A join key, where it is not the id of a UUIDv7 (that one is
# found by the time the id carries: join_sql's uuid7_key look-up): the default join key of most
# predictions, which would otherwise cost each of them a directory row.  An id, only where
# neither its join key nor its time finds it.  An episode, where there is one.
JOIN_KEY, PREDICTION_ID, EPISODE = "k", "i", "e"

# Version 7, variant 10, as decoding tells a UUIDv7.  From the id's bytes: spelling it as text
# first cost ten times as much, for every prediction of the window (docs/performance.md).
_IS_UUID7 = "(get_byte(uuid_send({id}), 6) >> 4 = 7 AND get_byte(uuid_send({id}), 8) >> 6 = 2)"


def key_rows(p: str) -> str:
    """The directory rows of prediction ``p``, as ``k (kind, key)``: a LATERAL VALUES whose
    NULL keys the caller filters out."""
    uuid7 = _IS_UUID7.format(id=f"{p}.prediction_id")
    id_text = f"{p}.prediction_id::text"
    chosen = f"{p}.join_key <> {id_text}"
    return f"""CROSS JOIN LATERAL (VALUES
    ('{JOIN_KEY}'::"char", CASE WHEN {chosen} OR NOT {uuid7} THEN {p}.join_key END),
    ('{PREDICTION_ID}'::"char", CASE WHEN {chosen} AND NOT {uuid7} THEN {id_text} END),
    ('{EPISODE}'::"char", {p}.episode_id::text)
) k (kind, key)"""


# $1, $2: INSERT_PREDICTIONS's (the window's earliest and latest prediction time, widened by
# DEDUPE_SPAN).  Right after it, in the same transaction: the keys of the staged predictions that
# have any (most have none: a UUIDv7 with its default join key, filtered out before any look-up)
# and are stored as staged -- inserted just now, or by an earlier copy of the window -- unless the
# directory holds them already (that copy's).  A prediction skipped as a copy of one stored at
# another time gets no key: the directory describes the stored row.  Not INSERT_PREDICTIONS's
# RETURNING rows: returning every inserted row was measured to cost more than these look-ups,
# which only predictions with keys pay (docs/performance.md).
INSERT_KEYS = f"""{STATEMENT_NAME}INSERT_KEYS
INSERT INTO feedbackflow.prediction_keys (kind, key, ts, prediction_id, application, model)
SELECT k.kind, k.key, p.ts, p.prediction_id, p.application, p.model
FROM (
    SELECT prediction_id, coalesce(join_key, prediction_id::text) AS join_key,
           {time_of("ts")} AS ts
    FROM stage_predictions
    WHERE join_key IS NOT NULL OR episode_id IS NOT NULL
       OR NOT {_IS_UUID7.format(id="prediction_id")}
    OFFSET 0) s
CROSS JOIN LATERAL (
    SELECT p.prediction_id, p.join_key, p.ts, p.episode_id, p.application, p.model
    FROM feedbackflow.predictions p
    WHERE p.prediction_id = s.prediction_id AND p.join_key = s.join_key AND p.ts = s.ts
      AND p.ts >= $1 AND p.ts <= $2
    LIMIT 1) p
{key_rows("p")}
LEFT JOIN LATERAL (
    SELECT 1 AS found FROM feedbackflow.prediction_keys d
    WHERE d.kind = k.kind AND d.key = k.key AND d.ts = p.ts AND d.prediction_id = p.prediction_id
    LIMIT 1) earlier ON true
WHERE k.key IS NOT NULL AND earlier.found IS NULL
"""

# $1: the start of the oldest day retention keeps.  The rows of the days it dropped.
TRIM = "DELETE FROM feedbackflow.prediction_keys WHERE ts < $1"
