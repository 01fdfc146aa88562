-- feedbackflow schema v1: predictions, feedback and dead letters, partitioned by day on event time.
-- Partitions are created on demand by the worker (workers/partitions.py) and dropped whole by
-- retention; there is no DEFAULT partition, so nothing lands where retention cannot reach it.

CREATE SCHEMA IF NOT EXISTS feedbackflow;

CREATE TABLE feedbackflow.predictions (
    prediction_id   uuid        NOT NULL,
    join_key        text        NOT NULL,
    ts              timestamptz NOT NULL,
    episode_id      uuid,
    application     text        NOT NULL,
    model           text,
    inputs          jsonb       NOT NULL,
    outputs         jsonb       NOT NULL,
    tags            jsonb       NOT NULL,
    ingested_at     timestamptz NOT NULL,
    -- The join key is in every key so that the table can be distributed by it (Citus).
    PRIMARY KEY (prediction_id, join_key, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX predictions_join_key ON feedbackflow.predictions (join_key, ts);
CREATE INDEX predictions_episode ON feedbackflow.predictions (episode_id, ts)
    WHERE episode_id IS NOT NULL;

CREATE TABLE feedbackflow.feedback (
    feedback_id           uuid             NOT NULL,
    -- The feedback's Kafka key: its target as text (prediction id, join key or episode id).
    join_key              text             NOT NULL,
    ts                    timestamptz      NOT NULL,
    metric                text             NOT NULL,
    metric_type           text             NOT NULL,
    target_kind           text             NOT NULL
        CHECK (target_kind IN ('prediction_id', 'join_key', 'episode_id')),
    target_prediction_id  uuid,
    target_join_key       text,
    target_episode_id     uuid,
    -- Prediction time carried by a UUIDv7 target: lets feedback for a prediction that retention
    -- already dropped be expired with that reason instead of waiting 90 days as pending.
    target_id_time        timestamptz,
    value_bool            boolean,
    value_float           double precision,
    value_text            text,
    value_json            jsonb,
    error_code            text,
    error_message         text,
    rationale             text,
    source_type           text,
    source_id             text,
    tags                  jsonb            NOT NULL,
    metadata              jsonb            NOT NULL,
    ingested_at           timestamptz      NOT NULL,
    status                text             NOT NULL DEFAULT 'pending'
        CHECK (status IN ('joined', 'pending', 'expired')),
    status_reason         text,
    prediction_id         uuid,
    application           text,
    model                 text,
    prediction_ts         timestamptz,
    delay_seconds         double precision,
    resolved_at           timestamptz,
    PRIMARY KEY (feedback_id, join_key, ts)
) PARTITION BY RANGE (ts);

-- The pending set, by target: a work queue, not history.  A row enters when a feedback finds no
-- prediction and leaves when it is joined or expired, so a new prediction looks its feedback up
-- in one small index -- not in one partial index per day partition of feedback.
CREATE TABLE feedbackflow.pending_feedback (
    feedback_id           uuid        NOT NULL,
    join_key              text        NOT NULL,
    ts                    timestamptz NOT NULL,
    target_prediction_id  uuid,
    target_join_key       text,
    target_episode_id     uuid,
    target_id_time        timestamptz,
    PRIMARY KEY (feedback_id, join_key, ts)
);
CREATE INDEX pending_feedback_prediction ON feedbackflow.pending_feedback (target_prediction_id)
    WHERE target_prediction_id IS NOT NULL;
CREATE INDEX pending_feedback_join_key ON feedbackflow.pending_feedback (target_join_key)
    WHERE target_join_key IS NOT NULL;
CREATE INDEX pending_feedback_episode ON feedbackflow.pending_feedback (target_episode_id)
    WHERE target_episode_id IS NOT NULL;
CREATE INDEX pending_feedback_ts ON feedbackflow.pending_feedback (ts);

CREATE TABLE feedbackflow.dead_letters (
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    kafka_ts         timestamptz NOT NULL,
    message_key      bytea,
    payload          bytea       NOT NULL,
    error_field      text        NOT NULL,
    reason           text        NOT NULL,
    received_at      timestamptz NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset, kafka_ts)
) PARTITION BY RANGE (kafka_ts);

-- What dashboards read.  Revisions: the latest timestamp per (target, metric, source id) wins,
-- ties broken by feedback_id; feedback without a source id is never a revision of another.
CREATE VIEW feedbackflow.feedback_current AS
SELECT DISTINCT ON (target_kind, join_key, metric, COALESCE(source_id, feedback_id::text)) *
FROM feedbackflow.feedback
ORDER BY target_kind, join_key, metric, COALESCE(source_id, feedback_id::text),
         ts DESC, feedback_id DESC;

-- Per metric, model and hour: count, mean and share positive of the current values.
CREATE VIEW feedbackflow.metric_summary_hourly AS
SELECT date_trunc('hour', ts)                       AS bucket,
       metric,
       application,
       model,
       count(*)                                     AS feedback_count,
       count(*) FILTER (WHERE status = 'joined')    AS joined_count,
       avg(value_float)                             AS mean_value,
       avg(value_bool::int)                         AS share_positive,
       count(*) FILTER (WHERE error_code IS NOT NULL) AS error_count
FROM feedbackflow.feedback_current
GROUP BY 1, 2, 3, 4;

-- Feedback delay distribution (seconds from prediction to feedback) for joined feedback.
CREATE VIEW feedbackflow.feedback_delay AS
SELECT metric, application, model, count(*) AS joined_count,
       percentile_cont(0.5)  WITHIN GROUP (ORDER BY delay_seconds) AS p50_seconds,
       percentile_cont(0.9)  WITHIN GROUP (ORDER BY delay_seconds) AS p90_seconds,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY delay_seconds) AS p99_seconds,
       max(delay_seconds) AS max_seconds
FROM feedbackflow.feedback
WHERE status = 'joined'
GROUP BY 1, 2, 3;

CREATE VIEW feedbackflow.feedback_status AS
SELECT metric, status, status_reason, count(*) AS feedback_count
FROM feedbackflow.feedback
GROUP BY 1, 2, 3;

-- Several annotators on one prediction: how many, the mean, and whether they agree.
CREATE VIEW feedbackflow.annotator_agreement AS
SELECT join_key, metric,
       count(*)                                  AS sources,
       avg(value_float)                          AS mean_value,
       stddev_samp(value_float)                  AS stddev_value,
       bool_and(value_bool) OR NOT bool_or(value_bool) AS booleans_agree
FROM feedbackflow.feedback_current
WHERE error_code IS NULL
GROUP BY 1, 2;

-- Episode-level feedback joined to every prediction of its episode.
CREATE VIEW feedbackflow.episode_feedback_predictions AS
SELECT f.feedback_id, f.metric, f.target_episode_id AS episode_id, p.prediction_id,
       p.application, p.model, p.ts AS prediction_ts, f.ts AS feedback_ts,
       f.value_bool, f.value_float, f.value_text, f.value_json
FROM feedbackflow.feedback f
JOIN feedbackflow.predictions p ON p.episode_id = f.target_episode_id
WHERE f.target_kind = 'episode_id';

-- A read-only role for Grafana (NOLOGIN: grant it to a login role of your choice).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'feedbackflow_reader') THEN
        CREATE ROLE feedbackflow_reader NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA feedbackflow TO feedbackflow_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA feedbackflow TO feedbackflow_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA feedbackflow GRANT SELECT ON TABLES TO feedbackflow_reader;
