-- Feedback aimed at predictions by their tags (wire v1 `tag_selector`, log10's
-- completion_tags_selector): workers.postgres.selectors.

-- The tags of selectable keys (pipeline.selectable_tags), as `key` and `key=value`, written with
-- their predictions in the window's transaction and dropped with them by day: a selector finds
-- its predictions through one of its tags instead of reading every prediction.  Keys that are not
-- selectable are not written here at all, so they cost nothing.
CREATE TABLE feedbackflow.prediction_tags (
    tag            text        NOT NULL,
    ts             timestamptz NOT NULL,
    prediction_id  uuid        NOT NULL,
    PRIMARY KEY (tag, ts, prediction_id)
) PARTITION BY RANGE (ts);

-- A tag-selector feedback as sent: resolved, at its window, into one ordinary feedback per
-- prediction it matched (joined, in feedbackflow.feedback, metadata naming this row), or kept
-- pending until a matching prediction is written, and expired past the retention.
CREATE TABLE feedbackflow.selector_feedback (
    feedback_id             uuid             NOT NULL,
    ts                      timestamptz      NOT NULL,
    metric                  text             NOT NULL,
    metric_type             text             NOT NULL,
    selector                text[]           NOT NULL,
    -- The selectable tag looked up first; pairs (`key=value` items) and keys (bare `key`
    -- items) must all hold too.
    probe_tag               text             NOT NULL,
    pairs                   jsonb            NOT NULL,
    keys                    text[]           NOT NULL,
    value_bool              boolean,
    value_float             double precision,
    value_text              text,
    value_json              jsonb,
    error_code              text,
    error_message           text,
    rationale               text,
    source_type             text,
    source_id               text,
    tags                    jsonb            NOT NULL,
    metadata                jsonb            NOT NULL,
    ingested_at             timestamptz      NOT NULL,
    status                  text             NOT NULL DEFAULT 'pending'
        CHECK (status IN ('joined', 'pending', 'expired')),
    status_reason           text,
    matched_prediction_ids  uuid[]           NOT NULL DEFAULT '{}',
    resolved_at             timestamptz,
    PRIMARY KEY (feedback_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX selector_feedback_pending ON feedbackflow.selector_feedback (ts)
    WHERE status = 'pending';

-- Run-time metrics may be log10's feedback tasks: their id, as the client addresses them.
ALTER TABLE feedbackflow.metric_definitions
    ADD COLUMN task_id uuid UNIQUE,
    ADD COLUMN task_selector text[];

-- log10's feedback as its client lists it: the selector feedback it became, by task.
CREATE TABLE feedbackflow.log10_feedback (
    feedback_id      uuid        PRIMARY KEY,
    ts               timestamptz NOT NULL,
    task_id          uuid        NOT NULL,
    organization_id  text        NOT NULL,
    caller           text        NOT NULL,
    -- What the client was answered at creation (task_id, json_values, selector, comment).
    answer           jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX log10_feedback_listing ON feedbackflow.log10_feedback
    (organization_id, created_at, feedback_id);
REVOKE ALL ON feedbackflow.log10_feedback FROM feedbackflow_reader;
