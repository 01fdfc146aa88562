-- Metrics defined at run time, MLflow's assessments as its client sees them, and retractions.

-- A metric defined while the system runs (an MLflow assessment name the config does not have,
-- later log10's feedback tasks), beside the ones `feedbackflow.toml` declares in code.  The
-- definition is the metric's table as the config file would spell it (type, level, schema,
-- description, ...), checked by the same code; every process reads this table at start and
-- every few seconds after (workers.postgres.metric_definitions).  A name the config declares
-- is never stored here: the file stays the way to declare metrics in code.
CREATE TABLE feedbackflow.metric_definitions (
    name        text        PRIMARY KEY,
    definition  jsonb       NOT NULL,
    -- Who defined it: 'mlflow' (an assessment name), 'api'.
    origin      text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- MLflow's assessments as its client reads them back (get, update, override, delete), kept by
-- the gateway after the broker acknowledged the feedback events they stand for.  The feedback
-- table stays the history (every revision, override and retraction is a feedback event); this
-- is the directory that maps an assessment id to its current revision, so that the client reads
-- what it wrote at once, without waiting for the worker's window.
CREATE TABLE feedbackflow.mlflow_assessments (
    assessment_id  uuid        PRIMARY KEY,
    trace_id       text        NOT NULL,
    -- The assessment in MLflow's JSON, as answered (valid, overrides, last_update_time ...).
    assessment     jsonb       NOT NULL,
    -- The feedback event that carries its current value.
    feedback_id    uuid        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
CREATE INDEX mlflow_assessments_trace ON feedbackflow.mlflow_assessments (trace_id);

-- A retraction (wire `retracted: true`) is stored as a revision with no value and no error: it
-- supersedes the earlier feedback of its target, metric and source, and is itself no current
-- value.  Only a retraction has neither (the wire format requires exactly one of value, error and
-- retracted, and a JSON null is no value), so the view needs no column of its own for it.
CREATE OR REPLACE VIEW feedbackflow.feedback_current AS
SELECT * FROM (
    SELECT DISTINCT ON (target_kind, join_key, metric, COALESCE(source_id, feedback_id::text)) *
    FROM feedbackflow.feedback
    ORDER BY target_kind, join_key, metric, COALESCE(source_id, feedback_id::text),
             ts DESC, feedback_id DESC
) latest
WHERE value_bool IS NOT NULL OR value_float IS NOT NULL OR value_text IS NOT NULL
   OR value_json IS NOT NULL OR error_code IS NOT NULL;

-- Dashboards have no business with MLflow's directory; metric definitions they may read.
REVOKE ALL ON feedbackflow.mlflow_assessments FROM feedbackflow_reader;
