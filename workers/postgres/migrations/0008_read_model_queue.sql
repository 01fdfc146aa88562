-- The read model kept off the window's path: a window's transaction only notes what it changed
-- (a few narrow rows, durable with its commit), and the worker's applier
-- (workers.postgres.read_model_applier) folds the notes into the rollups right after, in a
-- transaction of its own, with feedbackflow.read_model_apply_changes() of migration 0006.
-- docs/architecture.md, "Read model", says why; docs/performance.md what it saves.
--
-- A note names a feedback row by its primary key and says what happened to it:
--   'p' inserted pending (the applier takes it as it was then: pending, no prediction),
--   'n' inserted resolved (joined or expired: final, so the applier reads the row as it is),
--   'r' stored pending before, now resolved or expired (final too).
-- Only a pending row ever changes again, and only once, so a note needs no copy of the row.  A
-- window that resolves a feedback commits its 'r' note with the change, after the 'p' note of
-- the window that stored it pending: whatever set of committed notes the applier takes, an 'r'
-- never comes before its 'p'.
CREATE TABLE feedbackflow.read_model_queue (
    kind        "char"      NOT NULL CHECK (kind IN ('p', 'n', 'r')),
    feedback_id uuid        NOT NULL,
    join_key    text        NOT NULL,
    ts          timestamptz NOT NULL
);

-- New predictions counted per five-minute bucket of prediction time, application and model.
CREATE TABLE feedbackflow.read_model_queue_coverage (
    ts          timestamptz NOT NULL,
    application text,
    model       text,
    predictions bigint      NOT NULL
);

-- Every committed note folded into the rollups, in one transaction; returns how many notes
-- (feedback notes and coverage rows).  One
-- applier at a time (an advisory lock of its own; a second waits, then finds what is left).
-- The notes are taken by DELETE ... RETURNING, so a note committed after this statement's
-- snapshot stays for the next run, and one taken is applied in the same transaction that
-- removes it: none is applied twice or lost.
-- The notes reach their rows by primary key, a probe each in the day partition their time
-- names (nested loops with run-time pruning; a hash join would read whole partitions), and
-- nothing is compiled: the applier's connection has the server's defaults, not the sink's.
CREATE FUNCTION feedbackflow.read_model_apply_queue() RETURNS bigint LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    taken bigint;
    counted bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4627188117730549064);
    PERFORM feedbackflow.read_model_work_tables();
    CREATE TEMP TABLE IF NOT EXISTS read_model_taken (
        kind "char", feedback_id uuid, join_key text, ts timestamptz
    ) ON COMMIT DELETE ROWS;
    WITH gone AS (DELETE FROM feedbackflow.read_model_queue RETURNING *)
    INSERT INTO pg_temp.read_model_taken SELECT * FROM gone;
    GET DIAGNOSTICS taken = ROW_COUNT;
    WITH gone AS (DELETE FROM feedbackflow.read_model_queue_coverage RETURNING *)
    INSERT INTO pg_temp.read_model_coverage (ts, application, model, predictions, with_feedback)
    SELECT ts, application, model, predictions, 0 FROM gone;
    GET DIAGNOSTICS counted = ROW_COUNT;
    IF taken + counted = 0 THEN
        RETURN 0;
    END IF;
    ANALYZE pg_temp.read_model_taken;

    -- The rows as the notes say they were: a pending one as it was stored, the others as they
    -- are (their last state).  Rows gone since (retention dropped their day, which it does
    -- only after applying the notes before it) are skipped.
    INSERT INTO pg_temp.read_model_changes
    SELECT f.feedback_id, f.join_key, f.ts, f.metric, f.metric_type, f.target_kind,
           f.value_bool, f.value_float, f.value_text, f.error_code IS NOT NULL,
           f.value_bool IS NULL AND f.value_float IS NULL AND f.value_text IS NULL
               AND f.value_json IS NULL AND f.error_code IS NULL,
           f.source_type, f.source_id,
           CASE WHEN t.kind = 'p' THEN 'pending' ELSE f.status END,
           CASE WHEN t.kind = 'p' THEN NULL ELSE f.application END,
           CASE WHEN t.kind = 'p' THEN NULL ELSE f.model END,
           CASE WHEN t.kind = 'p' THEN NULL ELSE f.prediction_id END,
           CASE WHEN t.kind = 'p' THEN NULL ELSE f.prediction_ts END,
           CASE WHEN t.kind = 'p' THEN NULL ELSE f.delay_seconds END
    FROM pg_temp.read_model_taken t
    JOIN feedbackflow.feedback f
      ON f.feedback_id = t.feedback_id AND f.join_key = t.join_key AND f.ts = t.ts
    WHERE t.kind IN ('p', 'n');
    INSERT INTO pg_temp.read_model_resolved
    SELECT f.feedback_id, f.join_key, f.ts, f.metric, f.metric_type, f.target_kind,
           f.value_bool, f.value_float, f.value_text, f.error_code IS NOT NULL,
           f.value_bool IS NULL AND f.value_float IS NULL AND f.value_text IS NULL
               AND f.value_json IS NULL AND f.error_code IS NULL,
           f.source_type, f.source_id, f.status, f.application, f.model, f.prediction_id,
           f.prediction_ts, f.delay_seconds
    FROM pg_temp.read_model_taken t
    JOIN feedbackflow.feedback f
      ON f.feedback_id = t.feedback_id AND f.join_key = t.join_key AND f.ts = t.ts
    WHERE t.kind = 'r';

    PERFORM feedbackflow.read_model_apply_changes();
    RETURN taken + counted;
END
$$;

-- Rebuilt from the tables, the notes waiting are already in them: dropped, under the
-- applier's lock, in the rebuild's transaction (migration 0006's rebuild, renamed, does the rest).
ALTER FUNCTION feedbackflow.read_model_rebuild() RENAME TO read_model_recompute;
CREATE FUNCTION feedbackflow.read_model_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4627188117730549063);
    PERFORM pg_advisory_xact_lock(4627188117730549064);
    DELETE FROM feedbackflow.read_model_queue;
    DELETE FROM feedbackflow.read_model_queue_coverage;
    PERFORM feedbackflow.read_model_recompute();
END
$$;

-- Retention: the notes waiting are applied first (they may be of the days about to go), then
-- migration 0006's trim, renamed, drops what is older than the first day retention keeps.
ALTER FUNCTION feedbackflow.read_model_trim(timestamptz) RENAME TO read_model_trim_buckets;
CREATE FUNCTION feedbackflow.read_model_trim(kept_from timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM feedbackflow.read_model_apply_queue();
    PERFORM feedbackflow.read_model_trim_buckets(kept_from);
END
$$;
