"""The join semantics, as the set-based SQL one window runs in one transaction.

Order inside the transaction (``PostgresSink.write``):

1. COPY the window into per-connection staging tables (``ON COMMIT DELETE ROWS``).
2. Insert predictions, idempotent on their id: a replayed window, or the same event sent three
   times, inserts nothing new.
3. Take the resolution lock (one worker at a time from here to commit; see RESOLUTION_LOCK).
4. Insert feedback, idempotent on its id, *already resolved*: each row is looked up as it is
   inserted and stored as *joined*, as *expired* (``prediction_past_retention``: it came more
   than the retention after its prediction, or its UUIDv7 target says so and retention already
   dropped the prediction), or as *pending*, in which case it also joins the queue
   ``pending_feedback``.  A feedback is written once, not inserted and then updated.
5. Resolve the queued feedback whose target is among this window's predictions, and take it off
   the queue.
6. Expire queued feedback older than the retention (``no_prediction_within_retention``).
7. Insert dead letters (idempotent on topic, partition, offset).

Every statement is bounded by the window (index look-ups per staged row, on two or three day
partitions where an event's time or a UUIDv7 id says where to look) or by the pending queue,
never by the stored history.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from workers import time_spans
from workers.postgres.read_model_changes import CHANGE_COLUMNS, RETURNED, note_changes
from workers.stream.decode import DeadLetter, FeedbackRow, PredictionRow
from workers.time_spans import sql_interval

# What the worker stages (COPY), and what the window's SQL writes to the tables: the staged
# columns plus what follows from them (STAGED_PREDICTIONS, STAGED_FEEDBACK).
STAGED_PREDICTION_COLUMNS = PredictionRow._fields
STAGED_FEEDBACK_COLUMNS = FeedbackRow._fields
PREDICTION_COLUMNS = PredictionRow._fields
FEEDBACK_COLUMNS = (
    "feedback_id",
    "join_key",
    "ts",
    "metric",
    "metric_type",
    "target_kind",
    *FeedbackRow._fields[FeedbackRow._fields.index("target_prediction_id") :],
)
DEAD_LETTER_COLUMNS = DeadLetter._fields
TARGET_COLUMNS = ("target_prediction_id", "target_join_key", "target_episode_id", "target_id_time")
# Times the worker stages as microseconds since the Unix epoch (workers.stream.decode.micros).
MICROS_COLUMNS = ("ts", "target_id_time", "ingested_at")

# Statements built per window start with their name, for pg_stat_activity and the bench.
STATEMENT_NAME = "-- feedbackflow: "

# Stable codes: dashboards group by them.
PREDICTION_PAST_RETENTION = "prediction_past_retention"
NO_PREDICTION_WITHIN_RETENTION = "no_prediction_within_retention"


def cols(columns: tuple[str, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + c for c in columns)


def _same_feedback(a: str, b: str) -> str:
    """Equality on the feedback key, so that the feedback table is reached by its primary key."""
    return f"{a}.feedback_id = {b}.feedback_id AND {a}.join_key = {b}.join_key AND {a}.ts = {b}.ts"


def time_of(micros: str) -> str:
    """A staged time in micros as a timestamptz.  interval * bigint is exact for any such count
    (below 2^53), and the join key and the kind of a target are spelled here too: per window in
    Postgres rather than per event in Python (str(UUID) alone was a measurable share of the
    worker's time in py-spy; docs/performance.md)."""
    return f"timestamptz 'epoch' + {micros} * interval '1 microsecond'"


def staged(columns: tuple[str, ...]) -> str:
    """A staging table's columns: the table's own, but times as bigint micros."""
    return ", ".join(f"0::bigint AS {c}" if c in MICROS_COLUMNS else c for c in columns)


def as_stored(columns: tuple[str, ...], derived: dict[str, str]) -> str:
    return ", ".join(
        f"{derived[c]} AS {c}"
        if c in derived
        else f"{time_of(c)} AS {c}"
        if c in MICROS_COLUMNS
        else c
        for c in columns
    )


# A staged prediction's join key: the one its service chose, else its id as text (the default
# of the wire format).
PREDICTION_JOIN_KEY = "coalesce(s.join_key, s.prediction_id::text)"
# The staged rows as the tables hold them.  OFFSET 0 keeps each a subquery, so each time is
# computed once per row rather than at every place a statement uses it.
_PREDICTION_AS_STORED = as_stored(
    PREDICTION_COLUMNS, {"join_key": "coalesce(join_key, prediction_id::text)"}
)
STAGED_PREDICTIONS = f"(SELECT {_PREDICTION_AS_STORED} FROM stage_predictions OFFSET 0)"
_FEEDBACK_AS_STORED = as_stored(
    FEEDBACK_COLUMNS,
    {
        # The target as text, as the SDK keys the message (ingest.wire.events.Feedback.target).
        "join_key": "coalesce(target_join_key, target_prediction_id::text,"
        " target_episode_id::text)",
        "target_kind": "CASE WHEN target_prediction_id IS NOT NULL THEN 'prediction_id'"
        " WHEN target_join_key IS NOT NULL THEN 'join_key' ELSE 'episode_id' END",
    },
)
STAGED_FEEDBACK = f"(SELECT {_FEEDBACK_AS_STORED} FROM stage_feedback OFFSET 0)"


# Each window's statements are planned with its own bounds: a generic plan of a prepared
# statement cannot prune partitions by them and was measured many times slower.  They run once
# each: compiling them (JIT) is a cost that a single run never pays back.  And they reach stored
# rows by index only: a day partition that statistics say is empty (an ANALYZE ran before its
# first row) made the planner scan it whole for each staged row, while the same statement
# filled it: quadratic in the window, and many times slower than index look-ups
# (tests/integration/test_empty_partitions.py).  Staging tables are read whole either way.
# The measurements are in docs/performance.md.
CREATE_STAGING = f"""
SET plan_cache_mode = force_custom_plan;
SET jit = off;
SET enable_seqscan = off;
CREATE TEMP TABLE IF NOT EXISTS stage_predictions
    ON COMMIT DELETE ROWS AS
    SELECT {staged(STAGED_PREDICTION_COLUMNS)} FROM feedbackflow.predictions WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_feedback
    ON COMMIT DELETE ROWS AS
    SELECT {staged(STAGED_FEEDBACK_COLUMNS)} FROM feedbackflow.feedback WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_dead_letters
    ON COMMIT DELETE ROWS AS
    SELECT {cols(DEAD_LETTER_COLUMNS)} FROM feedbackflow.dead_letters WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS stage_queued
    ON COMMIT DELETE ROWS AS
    SELECT * FROM feedbackflow.pending_feedback WITH NO DATA;
CREATE INDEX IF NOT EXISTS stage_queued_key ON stage_queued (feedback_id);
"""

# Ids are idempotency keys.  A replay carries the same event time, and a producer's retry a
# close one, so the look-up for an earlier copy is bounded to a day either side of the event's
# time, by an index probe per staged row (a LATERAL ... LIMIT 1: planned as an anti-join it read
# the whole of today's partition every window, O(daily volume) instead of O(window)).  Every
# statement below that reaches a partitioned table by key also takes constant time
# bounds ($-parameters computed from the window), so the planner prunes to the two or three day
# partitions the window touches before it chooses a join.  Without them it either hashes every
# partition (the whole history, once per window) or probes all ~90 per row (run-time pruning
# of a 90-way Append, redone for every row, costs far more than the index probe it leads to;
# docs/performance.md).
#
# A window holds each id once (WindowBuffer), so the only copies an insert can meet are stored
# ones, which those look-ups find, and one that another worker is writing at the same moment
# (the old and the new owner of a partition during a rebalance).  So the inserts carry no
# ON CONFLICT clause: its speculative insertion cost every row, a sizeable share of both
# INSERT_PREDICTIONS and INSERT_FEEDBACK (docs/performance.md).  A concurrent copy instead makes
# the insert wait for the other transaction and, once that commits, fail with unique_violation;
# the worker retries the window (its RETRYABLE errors), and the retry's look-up finds the
# committed copy.
DEDUPE_SPAN = sql_interval(time_spans.DEDUPE_SPAN)
ID_TIME_SPAN = sql_interval(time_spans.ID_TIME_SPAN)
_TARGET = cols(TARGET_COLUMNS)

# $1, $2: the window's earliest and latest prediction time, widened by DEDUPE_SPAN.
INSERT_PREDICTIONS = f"""
INSERT INTO feedbackflow.predictions ({cols(PREDICTION_COLUMNS)})
SELECT s.* FROM {STAGED_PREDICTIONS} s
LEFT JOIN LATERAL (
    SELECT 1 AS found FROM feedbackflow.predictions p
    WHERE p.prediction_id = s.prediction_id AND p.ts >= $1 AND p.ts <= $2
      AND p.ts >= s.ts - {DEDUPE_SPAN} AND p.ts <= s.ts + {DEDUPE_SPAN}
    LIMIT 1) earlier ON true
WHERE earlier.found IS NULL
"""

# A feedback and its prediction written by two workers at once would otherwise miss each other:
# under READ COMMITTED neither sees the other's uncommitted row.  Each worker inserts its
# predictions, then takes this transaction-scoped lock, then inserts and resolves feedback.
# Whichever takes it second runs its statements after the first committed and sees its rows:
# its feedback finds the other's predictions, or its predictions find the other's queued
# feedback.  COPY and the prediction inserts, most of the work, still run in parallel.
RESOLUTION_LOCK = "SELECT pg_advisory_xact_lock(4627188117730549063)"

_PREDICTION = "SELECT p.prediction_id, p.application, p.model, p.ts FROM feedbackflow.predictions p"
# The same columns from the key directory (migration 0007), which holds them for every key.
_KEYED = "SELECT d.prediction_id, d.application, d.model, d.ts FROM feedbackflow.prediction_keys d"

# What a feedback may name, as the look-up branch that finds it.  A window's statements carry
# only the branches its feedback needs: each branch costs every row a rescan even when its
# one-time filter is false (when they searched every day partition, a window of UUIDv7 targets
# looked up with all four branches paid for three it never used; docs/performance.md).
#
# ``uuid7_key`` is a join key that spells a UUIDv7 (canonical, as a default join key is): it may
# be the default join key of a UUIDv7 prediction, which the key directory leaves out (the id's
# time finds it), so it is also looked up around that time.
TargetLookup = Literal["uuid7_id", "other_id", "join_key", "uuid7_key", "episode"]
TARGET_LOOKUPS: tuple[TargetLookup, ...] = (
    "uuid7_id",
    "other_id",
    "join_key",
    "uuid7_key",
    "episode",
)

# A join key that spells a UUIDv7 as uuid::text does, and the time that UUIDv7 carries.
_UUID7_TEXT = "'^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'"
_HEX = frozenset("0123456789abcdef")


def _key_uuid7(key: str) -> str:
    """The UUIDv7 the join key ``key`` spells, else NULL (a cast would fail the statement)."""
    return f"(CASE WHEN {key} ~ {_UUID7_TEXT} THEN {key}::uuid END)"


def _key_time(key: str) -> str:
    """The time the UUIDv7 the join key ``key`` spells carries (its first 48 bits, in ms), else
    NULL (the hex would not cast)."""
    millis = f"('x' || substr({key}, 1, 8) || substr({key}, 10, 4))::bit(48)::bigint"
    return (
        f"(CASE WHEN {key} ~ {_UUID7_TEXT}"
        f" THEN timestamptz 'epoch' + {millis} * interval '1 millisecond' END)"
    )


def join_key_time(key: str) -> int | None:
    """The time (micros) a join key carries when it spells a UUIDv7 (as _UUID7_TEXT), else
    None: string tests only, run for join-key targets alone."""
    if len(key) != 36 or key[14] != "7" or key[19] not in "89ab":
        return None
    if key[8] != "-" or key[13] != "-" or key[18] != "-" or key[23] != "-":
        return None
    digits = key[:8] + key[9:13] + key[14:18] + key[19:23] + key[24:]
    if not _HEX.issuperset(digits):
        return None
    return int(digits[:12], 16) * 1000


def target_lookup(
    target_prediction_id: object, target_id_time: object, target_join_key: object
) -> TargetLookup:
    """The branch that finds a feedback's prediction, from its target columns."""
    if target_id_time is not None:
        return "uuid7_id"
    if target_prediction_id is not None:
        return "other_id"
    if target_join_key is None:
        return "episode"
    if isinstance(target_join_key, str) and join_key_time(target_join_key) is not None:
        return "uuid7_key"
    return "join_key"


def _lookup(row: str, low: str, high: str, lookups: frozenset[TargetLookup]) -> str:
    """The prediction a feedback ``row`` names, as ``m``: one look-up chosen by its target.

    Only the branches in ``lookups`` are planned.  The conditions on ``row`` alone are one-time
    filters, so the other branches never touch the predictions table.  A UUIDv7 target is looked
    up only around the time its id carries, within the constant bounds ``low``..``high``
    (decoding holds predictions to that: a UUIDv7 id more than a day from its timestamp is a dead
    letter), and so is a join key that spells a UUIDv7, which may be the default join key of
    one.  Other ids, join keys and episodes are looked up in the key directory
    (workers.postgres.key_directory): one index probe, whatever the history, where the
    predictions would take one per day partition.  A prediction id is found under its join key
    when that is its id, else under its id.  A join key names its latest prediction; an episode
    is represented by its first prediction (the view episode_feedback_predictions lists them
    all).
    """
    branches = {
        "uuid7_id": f"""({_PREDICTION}
         WHERE {row}.target_id_time IS NOT NULL AND p.prediction_id = {row}.target_prediction_id
           AND p.ts >= {low} AND p.ts <= {high}
           AND p.ts >= {row}.target_id_time - {ID_TIME_SPAN}
           AND p.ts <= {row}.target_id_time + {ID_TIME_SPAN}
         LIMIT 1)""",
        "other_id": f"""({_KEYED}
         WHERE {row}.target_id_time IS NULL AND {row}.target_prediction_id IS NOT NULL
           AND d.kind IN ('k', 'i') AND d.key = {row}.target_prediction_id::text
           AND d.prediction_id = {row}.target_prediction_id
         LIMIT 1)""",
        "join_key": f"""({_KEYED}
         WHERE {row}.target_join_key IS NOT NULL
           AND d.kind = 'k' AND d.key = {row}.target_join_key
         ORDER BY d.ts DESC LIMIT 1)""",
        # The same, and the UUIDv7 whose default join key it may be, around that UUIDv7's time:
        # the latest of both.
        "uuid7_key": f"""(SELECT * FROM (
            ({_KEYED}
             WHERE {row}.target_join_key IS NOT NULL
               AND d.kind = 'k' AND d.key = {row}.target_join_key
             ORDER BY d.ts DESC LIMIT 1)
            UNION ALL
            ({_PREDICTION}
             WHERE p.prediction_id = {_key_uuid7(f"{row}.target_join_key")}
               AND p.join_key = {row}.target_join_key
               AND p.ts >= {low} AND p.ts <= {high}
               AND p.ts >= {_key_time(f"{row}.target_join_key")} - {ID_TIME_SPAN}
               AND p.ts <= {_key_time(f"{row}.target_join_key")} + {ID_TIME_SPAN}
             LIMIT 1)
         ) k ORDER BY k.ts DESC LIMIT 1)""",
        "episode": f"""(SELECT NULL::uuid AS prediction_id, d.application, d.model, d.ts
         FROM feedbackflow.prediction_keys d
         WHERE {row}.target_episode_id IS NOT NULL
           AND d.kind = 'e' AND d.key = {row}.target_episode_id::text
         ORDER BY d.ts ASC LIMIT 1)""",
    }
    if "uuid7_key" in lookups:  # it looks the directory up as well
        lookups = lookups - {"join_key"}
    chosen = [branches[name] for name in TARGET_LOOKUPS if name in lookups]
    if not chosen:
        raise ValueError("a look-up needs at least one target kind")
    if len(chosen) == 1:  # already LIMIT 1, which Postgres will not take twice
        return f"LEFT JOIN LATERAL {chosen[0]} m ON true"
    union = "\n        UNION ALL\n        ".join(chosen)
    return f"""LEFT JOIN LATERAL (
        {union}
        LIMIT 1
    ) m ON true"""


def _status(row: str, retention: str) -> str:
    """joined, expired (past retention) or pending, from the look-up ``m`` of ``row``."""
    return f"""CASE
        WHEN m.ts IS NOT NULL AND {row}.ts - m.ts > {retention}::interval THEN 'expired'
        WHEN m.ts IS NOT NULL THEN 'joined'
        WHEN {row}.target_id_time < {row}.ts - {retention}::interval THEN 'expired'
        ELSE 'pending' END"""


_RESOLVED = (
    "status",
    "status_reason",
    "prediction_id",
    "application",
    "model",
    "prediction_ts",
    "delay_seconds",
    "resolved_at",
)


@cache
def insert_feedback(lookups: frozenset[TargetLookup]) -> str:
    """The window's feedback, inserted resolved, with look-ups for the target kinds it has.

    $1, $2: the window's earliest and latest feedback time, widened by DEDUPE_SPAN; $3:
    retention; $4: now; $5, $6: the earliest and latest time the window's UUIDv7 targets carry,
    widened.
    """
    return f"""{STATEMENT_NAME}INSERT_FEEDBACK
WITH resolved AS (
    SELECT s.*,
           m.prediction_id AS found_id, m.application AS found_application,
           m.model AS found_model, m.ts AS found_ts, {_status("s", "$3")} AS status
    FROM {STAGED_FEEDBACK} s
    LEFT JOIN LATERAL (
        SELECT 1 AS found FROM feedbackflow.feedback f
        WHERE f.feedback_id = s.feedback_id AND f.ts >= $1 AND f.ts <= $2
          AND f.ts >= s.ts - {DEDUPE_SPAN} AND f.ts <= s.ts + {DEDUPE_SPAN}
        LIMIT 1) earlier ON true
    {_lookup("s", "$5", "$6", lookups)}
    WHERE earlier.found IS NULL
), inserted AS (
    INSERT INTO feedbackflow.feedback ({cols(FEEDBACK_COLUMNS)}, {cols(_RESOLVED)})
    SELECT {cols(FEEDBACK_COLUMNS)}, status,
           CASE WHEN status = 'expired' THEN '{PREDICTION_PAST_RETENTION}' END,
           found_id, found_application, found_model, found_ts,
           extract(epoch FROM ts - found_ts),
           CASE WHEN status <> 'pending' THEN $4::timestamptz END
    FROM resolved
    RETURNING {RETURNED}, {_TARGET}
), noted AS ({note_changes("inserted", was_pending=False)}
), queued AS (
    INSERT INTO feedbackflow.pending_feedback (feedback_id, join_key, ts, {_TARGET})
    SELECT feedback_id, join_key, ts, {_TARGET} FROM inserted WHERE status = 'pending'
    ON CONFLICT DO NOTHING
)
SELECT status, count(*) AS feedback FROM inserted GROUP BY status
"""


_QUEUED = cols(("feedback_id", "join_key", "ts", *TARGET_COLUMNS), "q")

# Queued feedback a prediction of this window resolves.
GATHER_QUEUED = f"""
INSERT INTO stage_queued
SELECT {_QUEUED} FROM feedbackflow.pending_feedback q
    JOIN stage_predictions s ON q.target_prediction_id = s.prediction_id
UNION
SELECT {_QUEUED} FROM feedbackflow.pending_feedback q
    JOIN stage_predictions s ON q.target_join_key = {PREDICTION_JOIN_KEY}
UNION
SELECT {_QUEUED} FROM feedbackflow.pending_feedback q
    JOIN stage_predictions s ON q.target_episode_id = s.episode_id
"""

# With a queue much larger than the window (a backfill of early feedback, a metric whose
# predictions never come), the planner hashes the whole queue for every window: O(pending).
# Index look-ups per staged prediction are O(window), and measured several times faster with a
# large queue (docs/performance.md); the sink asks for them when the queue outnumbers the
# window's predictions (QUEUE_PROBE_RATIO).
PROBE_THE_QUEUE = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
PLAN_FREELY = "SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on"

# The queue's size swings faster than autovacuum's thresholds follow (and autovacuum may be off):
# with stale statistics the planner read the whole queue to gather a window's queued feedback,
# many times slower than with fresh ones (docs/performance.md).  The sink refreshes them when
# the queue has changed enough.
ANALYZE_QUEUE = "ANALYZE feedbackflow.pending_feedback"
QUEUE_SIZE_ESTIMATE = (
    "SELECT reltuples FROM pg_class WHERE oid = 'feedbackflow.pending_feedback'::regclass"
)

# Rows inserted in this transaction are in no statistics: without its real size the planner has
# looped over a whole staging table per row, which made whole windows many times slower
# (docs/performance.md).
ANALYZE_QUEUED = "ANALYZE stage_queued"

# The gathered feedback's time bounds, the times its UUIDv7 targets carry (ids, and join keys
# that spell one), and which look-up branches it needs (TargetLookup).
QUEUED_BOUNDS = f"""
SELECT min(ts) AS ts_min, max(ts) AS ts_max,
       min(coalesce(target_id_time, {_key_time("target_join_key")})) AS id_time_min,
       max(coalesce(target_id_time, {_key_time("target_join_key")})) AS id_time_max,
       bool_or(target_id_time IS NOT NULL) AS uuid7_id,
       bool_or(target_id_time IS NULL AND target_prediction_id IS NOT NULL) AS other_id,
       bool_or(target_join_key IS NOT NULL) AS join_key,
       bool_or(target_join_key ~ {_UUID7_TEXT}) AS uuid7_key,
       bool_or(target_episode_id IS NOT NULL) AS episode
FROM stage_queued
"""


@cache
def resolve_queued(lookups: frozenset[TargetLookup]) -> str:
    """Resolve the gathered feedback, with look-ups for the target kinds it has.

    $1: retention, $2: now, $3/$4: the queued feedback's earliest and latest time, $5/$6: the
    earliest and latest time their UUIDv7 targets carry, widened by ID_TIME_SPAN.
    """
    return f"""{STATEMENT_NAME}RESOLVE_QUEUED
WITH found AS (
    SELECT c.feedback_id, c.join_key, c.ts, m.prediction_id, m.application, m.model,
           m.ts AS prediction_ts, {_status("c", "$1")} AS status
    FROM stage_queued c
    {_lookup("c", "$5", "$6", lookups)}
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
    WHERE found.status <> 'pending' AND {_same_feedback("f", "found")}
      AND f.status = 'pending' AND f.ts >= $3 AND f.ts <= $4
    RETURNING {cols(CHANGE_COLUMNS, "f")}
), noted AS ({note_changes("updated", was_pending=True)}
), dequeued AS (
    DELETE FROM feedbackflow.pending_feedback q USING updated u
    WHERE {_same_feedback("q", "u")}
)
SELECT status, count(*) AS feedback FROM updated GROUP BY status
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
INSERT INTO feedbackflow.dead_letters ({cols(DEAD_LETTER_COLUMNS)})
SELECT {cols(DEAD_LETTER_COLUMNS)} FROM stage_dead_letters
ON CONFLICT DO NOTHING
"""
