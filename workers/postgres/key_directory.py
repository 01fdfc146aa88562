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
the same statement as the predictions they describe, so a prediction is in the directory exactly
when it is stored: a replayed window, whose predictions insert nothing, adds no key either.
Retention deletes the rows of the days it drops (``TRIM``).  docs/architecture.md, "The key
directory"; the figures are in docs/performance.md.
"""

from __future__ import annotations

from workers.postgres.join_sql import INSERT_PREDICTIONS, STATEMENT_NAME

# The kinds of key (migration 0007).  A join key, where it is not the id of a UUIDv7 (that one is
# found by the time the id carries: join_sql's uuid7_key look-up): the default join key of most
# predictions, which would otherwise cost each of them a directory row.  An id, only where
# neither its join key nor its time finds it.  An episode, where there is one.
JOIN_KEY, PREDICTION_ID, EPISODE = "k", "i", "e"

_IS_UUID7 = (
    "(substr({id}::text, 15, 1) = '7' AND substr({id}::text, 20, 1) IN ('8', '9', 'a', 'b'))"
)


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


# The window's predictions, inserted as join_sql.INSERT_PREDICTIONS does (same $1, $2), and the
# keys of those it inserted, in one statement: the RETURNING rows are exactly the new
# predictions, without a second look-up.  Returns the number of predictions inserted.
INSERT_PREDICTIONS_AND_KEYS = f"""{STATEMENT_NAME}INSERT_PREDICTIONS_AND_KEYS
WITH inserted AS (
{INSERT_PREDICTIONS.strip()}
RETURNING prediction_id, join_key, ts, episode_id, application, model
), keyed AS (
    INSERT INTO feedbackflow.prediction_keys (kind, key, ts, prediction_id, application, model)
    SELECT k.kind, k.key, p.ts, p.prediction_id, p.application, p.model
    FROM inserted p
    {key_rows("p")}
    WHERE k.key IS NOT NULL
)
SELECT count(*) FROM inserted
"""

# $1: the start of the oldest day retention keeps.  The rows of the days it dropped.
TRIM = "DELETE FROM feedbackflow.prediction_keys WHERE ts < $1"
