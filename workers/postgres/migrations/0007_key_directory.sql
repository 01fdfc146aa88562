-- The key directory: the keys a feedback may name a prediction by, with what joining it needs
-- (the prediction's id, time, application and model), in one table with one index.  A feedback
-- naming a join key, an episode or a prediction id that carries no time (not a UUIDv7) is
-- resolved by one probe here instead of one probe per day partition of predictions
-- (workers.postgres.key_directory; docs/architecture.md, "The key directory").
--
-- kind 'k': the prediction's join key (chosen by its service, else its id as text), unless it is
--           the id of a UUIDv7, which the time the id carries finds; a prediction whose join key
--           is its id is found by id through it too.
-- kind 'i': the prediction's id as text, when its join key is chosen and its id is not a UUIDv7.
-- kind 'e': the prediction's episode id as text, when it has one.
--
-- Not partitioned: a partition per day would bring back a probe per day.  Retention deletes
-- the rows of the days it drops (workers.postgres.retention), found through the BRIN index on
-- ts: rows are written in time order, so the range index is nearly free to keep.
CREATE TABLE feedbackflow.prediction_keys (
    kind           "char"      NOT NULL CHECK (kind IN ('k', 'i', 'e')),
    key            text        NOT NULL,
    ts             timestamptz NOT NULL,
    prediction_id  uuid        NOT NULL,
    application    text        NOT NULL,
    model          text
);
-- Covering: a look-up reads the index alone (once vacuum has marked the pages all-visible, as
-- autovacuum does for inserts), one random read fewer per feedback once the directory outgrows
-- the buffer cache (docs/performance.md).
CREATE INDEX prediction_keys_key ON feedbackflow.prediction_keys (kind, key, ts)
    INCLUDE (prediction_id, application, model);
CREATE INDEX prediction_keys_ts ON feedbackflow.prediction_keys USING brin (ts);

-- The predictions stored before this migration (as workers.postgres.key_directory.key_rows).
INSERT INTO feedbackflow.prediction_keys (kind, key, ts, prediction_id, application, model)
SELECT k.kind, k.key, p.ts, p.prediction_id, p.application, p.model
FROM feedbackflow.predictions p
CROSS JOIN LATERAL (
    SELECT p.join_key <> p.prediction_id::text AS chosen,
           get_byte(uuid_send(p.prediction_id), 6) >> 4 = 7
           AND get_byte(uuid_send(p.prediction_id), 8) >> 6 = 2 AS uuid7
) id
CROSS JOIN LATERAL (VALUES
    ('k'::"char", CASE WHEN id.chosen OR NOT id.uuid7 THEN p.join_key END),
    ('i'::"char", CASE WHEN id.chosen AND NOT id.uuid7 THEN p.prediction_id::text END),
    ('e'::"char", p.episode_id::text)
) k (kind, key)
WHERE k.key IS NOT NULL;
