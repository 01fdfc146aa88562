-- The read model (issue 13): rollups the dashboards, the report and export read, kept up to date
-- by the window's transaction with deltas (workers.postgres.read_model_sql), rebuilt from the
-- tables by feedbackflow.read_model_rebuild() (below; `feedbackflow read-model rebuild`).
-- docs/architecture.md, "Read model", says why deltas and what each table holds.
--
-- Every rollup has a row per grain ('5m', '1h', '1d') and bucket: a panel over 90 days reads day
-- rows, one over a few hours five-minute rows (feedbackflow.read_model_grain).  Unknown parts of
-- a key (the application and model of pending feedback, a source without a type) are NULL, and
-- NULLS NOT DISTINCT makes them one key.  A row whose counts went back to zero (pending feedback
-- that joined) stays, with feedback_count = 0: the queries sum, and zero adds nothing.

-- Grains: the bucket of a time, in UTC (date_bin, whatever the session's time zone).
CREATE FUNCTION feedbackflow.read_model_bucket(grain text, ts timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin(CASE grain WHEN '5m' THEN interval '5 minutes'
                               WHEN '1h' THEN interval '1 hour'
                               ELSE interval '1 day' END,
                    ts, timestamptz '2000-01-01 00:00:00+00')
$$;

-- The grain a panel over [time_from, time_to) reads: a few hundred buckets at most.
CREATE FUNCTION feedbackflow.read_model_grain(time_from timestamptz, time_to timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN time_to - time_from <= interval '1 day' THEN '5m'
                WHEN time_to - time_from <= interval '14 days' THEN '1h'
                ELSE '1d' END
$$;

-- The feedback delay histogram's upper bounds (seconds): 1m, 5m, 15m, 1h, 6h, 1d, 3d, 7d, 30d,
-- 90d, +inf.  A delay falls in the first bound at or above it (a negative delay in the first).
CREATE FUNCTION feedbackflow.delay_bound(seconds double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN seconds <= 60 THEN 60
                WHEN seconds <= 300 THEN 300
                WHEN seconds <= 900 THEN 900
                WHEN seconds <= 3600 THEN 3600
                WHEN seconds <= 21600 THEN 21600
                WHEN seconds <= 86400 THEN 86400
                WHEN seconds <= 259200 THEN 259200
                WHEN seconds <= 604800 THEN 604800
                WHEN seconds <= 2592000 THEN 2592000
                WHEN seconds <= 7776000 THEN 7776000
                ELSE 'Infinity'::double precision END
$$;

-- The same bounds as an array, for the quantiles.
CREATE FUNCTION feedbackflow.delay_bounds()
RETURNS double precision[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[60, 300, 900, 3600, 21600, 86400, 259200, 604800, 2592000, 7776000,
                 'Infinity']::double precision[]
$$;

-- The q-quantiles of a delay histogram (the upper bounds of its non-empty bins, ascending, and
-- their counts), each interpolated linearly inside the bin where it falls, from the bound below
-- it (feedbackflow.delay_bounds; 0 below the first); in the +inf bin, that bin's lower bound.
CREATE FUNCTION feedbackflow.histogram_quantiles(
    qs double precision[], bounds double precision[], counts numeric[])
RETURNS double precision[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    every_bound constant double precision[] := feedbackflow.delay_bounds();
    total numeric := 0;
    seen numeric;
    lower double precision;
    rank numeric;
    found double precision;
    answers double precision[] := '{}';
    i integer;
    k integer;
    q double precision;
BEGIN
    FOR i IN 1 .. coalesce(array_length(counts, 1), 0) LOOP
        total := total + counts[i];
    END LOOP;
    FOREACH q IN ARRAY qs LOOP
        IF total <= 0 THEN
            answers := answers || NULL::double precision;
            CONTINUE;
        END IF;
        rank := q::numeric * total;
        seen := 0;
        found := NULL;
        FOR i IN 1 .. array_length(counts, 1) LOOP
            lower := 0;
            FOR k IN 1 .. array_length(every_bound, 1) LOOP
                EXIT WHEN every_bound[k] >= bounds[i];
                lower := every_bound[k];
            END LOOP;
            IF counts[i] > 0 AND seen + counts[i] >= rank THEN
                found := CASE WHEN bounds[i] = 'Infinity'::double precision THEN lower
                              ELSE lower + (bounds[i] - lower)
                                           * ((rank - seen) / counts[i])::double precision
                         END;
                EXIT;
            END IF;
            seen := seen + counts[i];
        END LOOP;
        answers := answers || coalesce(found, lower);
    END LOOP;
    RETURN answers;
END
$$;

-- Current feedback values, summed per bucket of feedback time (ts), metric, application,
-- model, source type and status.  Float values as count, sum and sum of squares (numeric:
-- subtracting a revised value leaves exactly what a rebuild computes); booleans as count and
-- positives; errors counted apart.  A retraction counts nowhere.
CREATE TABLE feedbackflow.feedback_rollup (
    grain              text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket             timestamptz NOT NULL,
    metric             text        NOT NULL,
    metric_type        text        NOT NULL,
    application        text,
    model              text,
    source_type        text,
    status             text        NOT NULL,
    feedback_count     bigint      NOT NULL DEFAULT 0,
    error_count        bigint      NOT NULL DEFAULT 0,
    value_count        bigint      NOT NULL DEFAULT 0,
    value_sum          numeric     NOT NULL DEFAULT 0,
    value_sum_squares  numeric     NOT NULL DEFAULT 0,
    boolean_count      bigint      NOT NULL DEFAULT 0,
    positive_count     bigint      NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX feedback_rollup_key ON feedbackflow.feedback_rollup
    (grain, bucket, metric, metric_type, application, model, source_type, status)
    NULLS NOT DISTINCT;

-- Categorical metrics: current values per category (value_text).
CREATE TABLE feedbackflow.feedback_category_rollup (
    grain           text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket          timestamptz NOT NULL,
    metric          text        NOT NULL,
    application     text,
    model           text,
    source_type     text,
    status          text        NOT NULL,
    category        text        NOT NULL,
    feedback_count  bigint      NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX feedback_category_rollup_key ON feedbackflow.feedback_category_rollup
    (grain, bucket, metric, application, model, source_type, status, category)
    NULLS NOT DISTINCT;

-- Joined current feedback per delay bin (feedbackflow.delay_bound): percentiles over any range
-- by feedbackflow.histogram_quantiles.
CREATE TABLE feedbackflow.feedback_delay_rollup (
    grain           text             NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket          timestamptz      NOT NULL,
    metric          text             NOT NULL,
    application     text,
    model           text,
    le_seconds      double precision NOT NULL,
    feedback_count  bigint           NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX feedback_delay_rollup_key ON feedbackflow.feedback_delay_rollup
    (grain, bucket, metric, application, model, le_seconds) NULLS NOT DISTINCT;

-- Per bucket of PREDICTION time: predictions stored, and those with at least one joined
-- feedback (counted once, when the first joins: predictions_with_feedback remembers which).
CREATE TABLE feedbackflow.prediction_coverage_rollup (
    grain          text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket         timestamptz NOT NULL,
    application    text        NOT NULL,
    model          text,
    predictions    bigint      NOT NULL DEFAULT 0,
    with_feedback  bigint      NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX prediction_coverage_rollup_key ON feedbackflow.prediction_coverage_rollup
    (grain, bucket, application, model) NULLS NOT DISTINCT;

CREATE TABLE feedbackflow.predictions_with_feedback (
    prediction_id  uuid        NOT NULL,
    prediction_ts  timestamptz NOT NULL,
    PRIMARY KEY (prediction_id, prediction_ts)
);
-- (No index on prediction_ts: retention trims it once a day by reading it, rather than every
-- window maintaining a second index.)

-- Revision heads: the current revision of each (target, metric, source id), with what it
-- contributes to the rollups, so that a new revision finds what it supersedes (and subtracts
-- it) by one probe of the primary key.  Feedback without a source id revises nothing and has
-- no head.  Also the ratings agreement is computed from (an item is target and metric).
CREATE TABLE feedbackflow.feedback_heads (
    target_kind    text             NOT NULL,
    join_key       text             NOT NULL,
    metric         text             NOT NULL,
    source_id      text             NOT NULL,
    feedback_id    uuid             NOT NULL,
    ts             timestamptz      NOT NULL,
    metric_type    text             NOT NULL,
    application    text,
    model          text,
    source_type    text,
    status         text             NOT NULL,
    value_bool     boolean,
    value_float    double precision,
    value_text     text,
    has_error      boolean          NOT NULL,
    retracted      boolean          NOT NULL,
    delay_seconds  double precision,
    PRIMARY KEY (target_kind, join_key, metric, source_id)
);
-- (No index on ts: retention trims the heads once a day by reading them, rather than every
-- window maintaining a second index; docs/performance.md.)

-- Agreement between two source types (Cohen's kappa): per item rated by both, the pair of
-- their ratings (each type's latest rating of the item).  source_type_a < source_type_b.
CREATE TABLE feedbackflow.agreement_pair_rollup (
    grain          text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket         timestamptz NOT NULL,
    metric         text        NOT NULL,
    source_type_a  text        NOT NULL,
    source_type_b  text        NOT NULL,
    category_a     text        NOT NULL,
    category_b     text        NOT NULL,
    items          bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket, metric, source_type_a, source_type_b, category_a, category_b)
);

-- Agreement across sources (Fleiss' kappa): items with two ratings or more, their ratings, and
-- the sum of each item's agreement P_i; the ratings per category in the next table.
CREATE TABLE feedbackflow.agreement_item_rollup (
    grain                text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket               timestamptz NOT NULL,
    metric               text        NOT NULL,
    items                bigint      NOT NULL DEFAULT 0,
    ratings              bigint      NOT NULL DEFAULT 0,
    sum_item_agreement   numeric     NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket, metric)
);

CREATE TABLE feedbackflow.agreement_category_rollup (
    grain     text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket    timestamptz NOT NULL,
    metric    text        NOT NULL,
    category  text        NOT NULL,
    ratings   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket, metric, category)
);

-- What a change to the feedback adds or removes: the session's work tables, filled per window
-- (workers.postgres.read_model_sql) or by the rebuild, emptied at commit.
CREATE FUNCTION feedbackflow.read_model_work_tables() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL client_min_messages = warning;  -- "already exists, skipping"
    -- Feedback rows a window changed, as they are after the change: new ones (inserted by the
    -- window), and those stored pending before that the window resolved or expired.
    CREATE TEMP TABLE IF NOT EXISTS read_model_changes (
        feedback_id    uuid, join_key text, ts timestamptz, metric text, metric_type text,
        target_kind    text, value_bool boolean, value_float double precision,
        value_text     text, has_error boolean, retracted boolean, source_type text,
        source_id      text, status text, application text, model text,
        prediction_id  uuid, prediction_ts timestamptz, delay_seconds double precision
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS read_model_resolved (LIKE read_model_changes)
        ON COMMIT DELETE ROWS;
    -- Contributions to add (sign 1) or take away (sign -1).
    CREATE TEMP TABLE IF NOT EXISTS read_model_contributions (
        sign           integer NOT NULL,
        ts             timestamptz, metric text, metric_type text, application text,
        model          text, source_type text, status text, value_bool boolean,
        value_float    double precision, value_text text, has_error boolean,
        retracted      boolean, delay_seconds double precision
    ) ON COMMIT DELETE ROWS;
    -- Ratings of the items whose heads change: before (sign -1) and after (sign 1).
    CREATE TEMP TABLE IF NOT EXISTS read_model_ratings (
        sign           integer NOT NULL,
        target_kind    text, join_key text, metric text, source_id text, source_type text,
        feedback_id    uuid, ts timestamptz, category text
    ) ON COMMIT DELETE ROWS;
    -- Per item and category: its ratings (n), and the item's ratings and earliest time.
    CREATE TEMP TABLE IF NOT EXISTS read_model_items (
        sign integer, target_kind text, join_key text, metric text, category text, n bigint,
        ratings numeric, ts timestamptz
    ) ON COMMIT DELETE ROWS;
    -- Predictions counted (predictions) and first joined (with_feedback), by prediction time
    -- (rows may be summed already, per five-minute bucket).
    CREATE TEMP TABLE IF NOT EXISTS read_model_coverage (
        ts             timestamptz, application text, model text,
        predictions    bigint NOT NULL, with_feedback bigint NOT NULL
    ) ON COMMIT DELETE ROWS;
    -- The window's new heads of ratings, and whether each replaces a stored head (else it is
    -- added): written after their items' ratings are read (read_model_note_ratings).
    CREATE TEMP TABLE IF NOT EXISTS read_model_new_heads (
        LIKE feedbackflow.feedback_heads, replaces boolean NOT NULL
    ) ON COMMIT DELETE ROWS;
END
$$;

-- The category a rating is: boolean and categorical metrics have one.
CREATE FUNCTION feedbackflow.read_model_category(
    metric_type text, value_bool boolean, value_text text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE metric_type WHEN 'boolean' THEN value_bool::text
                            WHEN 'categorical' THEN value_text END
$$;

-- Add read_model_contributions to the rollups: one grouped upsert per rollup.  Summed per
-- five-minute bucket first (one pass over the rows), then each grain from those sums (hours
-- and days are unions of five-minute buckets).  The work tables are joined to each other only,
-- so hash joins are allowed again here.
CREATE FUNCTION feedbackflow.read_model_add_contributions() RETURNS void LANGUAGE plpgsql
SET enable_hashjoin = on SET enable_mergejoin = on SET enable_sort = off AS $$
BEGIN
    INSERT INTO feedbackflow.feedback_rollup AS r (
        grain, bucket, metric, metric_type, application, model, source_type, status,
        feedback_count, error_count, value_count, value_sum, value_sum_squares,
        boolean_count, positive_count)
    SELECT g.grain, feedbackflow.read_model_bucket(g.grain, f.bucket), f.metric, f.metric_type,
           f.application, f.model, f.source_type, f.status, sum(f.feedback_count),
           sum(f.error_count), sum(f.value_count), sum(f.value_sum), sum(f.value_sum_squares),
           sum(f.boolean_count), sum(f.positive_count)
    FROM (
        SELECT feedbackflow.read_model_bucket('5m', c.ts) AS bucket, c.metric, c.metric_type,
               c.application, c.model, c.source_type, c.status,
               sum(c.sign) AS feedback_count,
               coalesce(sum(c.sign) FILTER (WHERE c.has_error), 0) AS error_count,
               coalesce(sum(c.sign) FILTER (WHERE c.value IS NOT NULL), 0) AS value_count,
               coalesce(sum(c.sign * c.value), 0) AS value_sum,
               coalesce(sum(c.sign * c.value * c.value), 0) AS value_sum_squares,
               coalesce(sum(c.sign) FILTER (WHERE c.value_bool IS NOT NULL), 0)
                   AS boolean_count,
               coalesce(sum(c.sign) FILTER (WHERE c.value_bool), 0) AS positive_count
        -- (The float converted to numeric once per row: the conversion prints the float.)
        FROM (SELECT *, value_float::numeric AS value FROM pg_temp.read_model_contributions
              OFFSET 0) c
        WHERE NOT c.retracted
        GROUP BY 1, 2, 3, 4, 5, 6, 7
    ) f
    CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g (grain)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (grain, bucket, metric, metric_type, application, model, source_type, status)
    DO UPDATE SET
        feedback_count = r.feedback_count + excluded.feedback_count,
        error_count = r.error_count + excluded.error_count,
        value_count = r.value_count + excluded.value_count,
        value_sum = r.value_sum + excluded.value_sum,
        value_sum_squares = r.value_sum_squares + excluded.value_sum_squares,
        boolean_count = r.boolean_count + excluded.boolean_count,
        positive_count = r.positive_count + excluded.positive_count;

    INSERT INTO feedbackflow.feedback_category_rollup AS r (
        grain, bucket, metric, application, model, source_type, status, category,
        feedback_count)
    SELECT g.grain, feedbackflow.read_model_bucket(g.grain, f.bucket), f.metric,
           f.application, f.model, f.source_type, f.status, f.category, sum(f.n)
    FROM (
        SELECT feedbackflow.read_model_bucket('5m', c.ts) AS bucket, c.metric, c.application,
               c.model, c.source_type, c.status, c.value_text AS category, sum(c.sign) AS n
        FROM pg_temp.read_model_contributions c
        WHERE c.metric_type = 'categorical' AND c.value_text IS NOT NULL AND NOT c.retracted
        GROUP BY 1, 2, 3, 4, 5, 6, 7
    ) f
    CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g (grain)
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (grain, bucket, metric, application, model, source_type, status, category)
    DO UPDATE SET feedback_count = r.feedback_count + excluded.feedback_count;

    INSERT INTO feedbackflow.feedback_delay_rollup AS r (
        grain, bucket, metric, application, model, le_seconds, feedback_count)
    SELECT g.grain, feedbackflow.read_model_bucket(g.grain, f.bucket), f.metric,
           f.application, f.model, f.le_seconds, sum(f.n)
    FROM (
        SELECT feedbackflow.read_model_bucket('5m', c.ts) AS bucket, c.metric, c.application,
               c.model, feedbackflow.delay_bound(c.delay_seconds) AS le_seconds,
               sum(c.sign) AS n
        FROM pg_temp.read_model_contributions c
        WHERE c.status = 'joined' AND c.delay_seconds IS NOT NULL AND NOT c.retracted
        GROUP BY 1, 2, 3, 4, 5
    ) f
    CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g (grain)
    GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (grain, bucket, metric, application, model, le_seconds)
    DO UPDATE SET feedback_count = r.feedback_count + excluded.feedback_count;
END
$$;

-- Add read_model_ratings to the agreement rollups.  An item (target, metric) is bucketed by its
-- earliest rating's time; each source's current rating counts once.  Each statement reads the
-- ratings once, grouped and windowed per item: no join between work tables, whose sizes the
-- planner does not know (they are never analyzed).
CREATE FUNCTION feedbackflow.read_model_add_ratings() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- Per item and category: n_ij, and per item its ratings n_i and earliest time.
    INSERT INTO pg_temp.read_model_items
    SELECT sign, target_kind, join_key, metric, category, n,
           sum(n) OVER item, min(first_ts) OVER item
    FROM (SELECT sign, target_kind, join_key, metric, category, count(*) AS n,
                 min(ts) AS first_ts
          FROM pg_temp.read_model_ratings
          GROUP BY sign, target_kind, join_key, metric, category) per_category
    WINDOW item AS (PARTITION BY sign, target_kind, join_key, metric);

    -- Fleiss: P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)) for items with n_i >= 2.
    INSERT INTO feedbackflow.agreement_item_rollup AS r (
        grain, bucket, metric, items, ratings, sum_item_agreement)
    SELECT g.grain, feedbackflow.read_model_bucket(g.grain, i.ts), i.metric,
           sum(i.sign), sum(i.sign * i.ratings),
           sum(i.sign * (i.squares - i.ratings)::numeric / (i.ratings * (i.ratings - 1)))
    FROM (SELECT sign, metric, ts, ratings, sum(n * n) AS squares
          FROM pg_temp.read_model_items WHERE ratings >= 2
          GROUP BY sign, target_kind, join_key, metric, ts, ratings) i
    CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g (grain)
    GROUP BY 1, 2, 3
    ON CONFLICT (grain, bucket, metric) DO UPDATE SET
        items = r.items + excluded.items,
        ratings = r.ratings + excluded.ratings,
        sum_item_agreement = r.sum_item_agreement + excluded.sum_item_agreement;

    INSERT INTO feedbackflow.agreement_category_rollup AS r (
        grain, bucket, metric, category, ratings)
    SELECT g.grain, feedbackflow.read_model_bucket(g.grain, i.ts), i.metric, i.category,
           sum(i.sign * i.n)
    FROM pg_temp.read_model_items i
    CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g (grain)
    WHERE i.ratings >= 2
    GROUP BY 1, 2, 3, 4
    ON CONFLICT (grain, bucket, metric, category) DO UPDATE SET
        ratings = r.ratings + excluded.ratings;

    -- Cohen: per item and source type its latest rating; a pair per item and two types
    -- (source_type_a < source_type_b), taken from the item's few types.
    INSERT INTO feedbackflow.agreement_pair_rollup AS r (
        grain, bucket, metric, source_type_a, source_type_b, category_a, category_b, items)
    SELECT g.grain, feedbackflow.read_model_bucket(g.grain, t.ts), t.metric,
           t.types[a], t.types[b], t.categories[a], t.categories[b], sum(t.sign)
    FROM (SELECT sign, metric, min(item_ts) AS ts,
                 array_agg(source_type ORDER BY source_type) AS types,
                 array_agg(category ORDER BY source_type) AS categories
          FROM (SELECT DISTINCT ON (sign, target_kind, join_key, metric, source_type) *
                FROM (SELECT x.*, min(x.ts) OVER (PARTITION BY x.sign, x.target_kind,
                                                                x.join_key, x.metric) AS item_ts
                      FROM pg_temp.read_model_ratings x) rated
                WHERE source_type IS NOT NULL
                ORDER BY sign, target_kind, join_key, metric, source_type,
                         ts DESC, feedback_id DESC) latest
          GROUP BY sign, target_kind, join_key, metric) t
    CROSS JOIN LATERAL generate_series(1, cardinality(t.types)) a
    CROSS JOIN LATERAL generate_series(a + 1, cardinality(t.types)) b
    CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g (grain)
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (grain, bucket, metric, source_type_a, source_type_b, category_a, category_b)
    DO UPDATE SET items = r.items + excluded.items;
END
$$;

CREATE FUNCTION feedbackflow.read_model_add_coverage() RETURNS void LANGUAGE plpgsql
SET enable_hashjoin = on SET enable_mergejoin = on AS $$
BEGIN
    INSERT INTO feedbackflow.prediction_coverage_rollup AS r (
        grain, bucket, application, model, predictions, with_feedback)
    SELECT g.grain, feedbackflow.read_model_bucket(g.grain, f.bucket), f.application, f.model,
           sum(f.predictions), sum(f.with_feedback)
    FROM (
        SELECT feedbackflow.read_model_bucket('5m', c.ts) AS bucket, c.application, c.model,
               sum(c.predictions) AS predictions, sum(c.with_feedback) AS with_feedback
        FROM pg_temp.read_model_coverage c
        WHERE c.application IS NOT NULL
        GROUP BY 1, 2, 3
    ) f
    CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g (grain)
    GROUP BY 1, 2, 3, 4
    ON CONFLICT (grain, bucket, application, model) DO UPDATE SET
        predictions = r.predictions + excluded.predictions,
        with_feedback = r.with_feedback + excluded.with_feedback;
END
$$;

-- The ratings of the items whose heads change (heads of boolean and categorical metrics with a
-- value), signed: read before the heads change (-1) and after (1).
CREATE FUNCTION feedbackflow.read_model_note_ratings(item_sign integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.read_model_ratings
    SELECT item_sign, h.target_kind, h.join_key, h.metric, h.source_id, h.source_type,
           h.feedback_id, h.ts,
           feedbackflow.read_model_category(h.metric_type, h.value_bool, h.value_text)
    FROM (SELECT DISTINCT target_kind, join_key, metric FROM pg_temp.read_model_new_heads
          WHERE metric_type IN ('boolean', 'categorical')) n
    JOIN feedbackflow.feedback_heads h
      ON h.target_kind = n.target_kind AND h.join_key = n.join_key AND h.metric = n.metric
    WHERE feedbackflow.read_model_category(h.metric_type, h.value_bool, h.value_text)
          IS NOT NULL;
END
$$;

-- Coverage: a prediction's first joined feedback among the window's changes, remembered in
-- predictions_with_feedback and counted.  Those not remembered yet are found by one probe of
-- the key each (the CTEs share the statement's snapshot, so the probe sees the table before the
-- insert), then inserted without ON CONFLICT (windows hold the resolution lock: no other
-- writer), which was measured cheaper than a speculative insertion (docs/performance.md).
CREATE FUNCTION feedbackflow.read_model_note_first_feedback() RETURNS void LANGUAGE plpgsql
SET enable_sort = off AS $$
BEGIN
    WITH first AS MATERIALIZED (
        SELECT j.prediction_id, j.prediction_ts, j.application, j.model
        FROM (SELECT prediction_id, prediction_ts, min(application) AS application,
                     min(model) AS model
              FROM (SELECT prediction_id, prediction_ts, application, model, status
                    FROM pg_temp.read_model_changes
                    UNION ALL
                    SELECT prediction_id, prediction_ts, application, model, status
                    FROM pg_temp.read_model_resolved) c
              WHERE status = 'joined' AND prediction_id IS NOT NULL
              GROUP BY prediction_id, prediction_ts) j
        WHERE NOT EXISTS (
            SELECT 1 FROM feedbackflow.predictions_with_feedback p
            WHERE p.prediction_id = j.prediction_id AND p.prediction_ts = j.prediction_ts)
    ), remembered AS (
        INSERT INTO feedbackflow.predictions_with_feedback (prediction_id, prediction_ts)
        SELECT prediction_id, prediction_ts FROM first
    )
    INSERT INTO pg_temp.read_model_coverage
    SELECT feedbackflow.read_model_bucket('5m', prediction_ts), application, model, 0, count(*)
    FROM first GROUP BY 1, 2, 3;
END
$$;

-- One window's changes (read_model_changes, and read_model_coverage's new predictions) applied
-- to the heads and the rollups.  Each feedback is taken as it stands after the window (its last
-- change); one that was stored pending before now leaves its pending contribution.  The heads
-- are reached by their primary key only (nested loops; no hash joins or merge joins, which read
-- the whole table), so that the cost follows the window, not the heads' number.
CREATE FUNCTION feedbackflow.read_model_apply_changes() RETURNS void LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
BEGIN
    -- A new feedback the window also resolved (stored pending, then joined or expired): it
    -- counts as new, in the state it ends in.  Both are this window's work tables, so a hash
    -- join is no read of history.
    IF EXISTS (SELECT 1 FROM pg_temp.read_model_resolved) THEN
        SET LOCAL enable_hashjoin = on;
        UPDATE pg_temp.read_model_changes n SET
            status = r.status, application = r.application, model = r.model,
            prediction_id = r.prediction_id, prediction_ts = r.prediction_ts,
            delay_seconds = r.delay_seconds
        FROM pg_temp.read_model_resolved r
        WHERE r.feedback_id = n.feedback_id AND r.join_key = n.join_key AND r.ts = n.ts;
        DELETE FROM pg_temp.read_model_resolved r USING pg_temp.read_model_changes n
        WHERE r.feedback_id = n.feedback_id AND r.join_key = n.join_key AND r.ts = n.ts;
        SET LOCAL enable_hashjoin = off;
    END IF;

    -- Stored pending, resolved now: counts move from pending to the outcome, for feedback that
    -- is current (no source id, or its key's head).
    INSERT INTO pg_temp.read_model_contributions
    SELECT s.sign, f.ts, f.metric, f.metric_type,
           CASE WHEN s.sign = 1 THEN f.application END, CASE WHEN s.sign = 1 THEN f.model END,
           f.source_type, CASE WHEN s.sign = 1 THEN f.status ELSE 'pending' END,
           f.value_bool, f.value_float, f.value_text, f.has_error, f.retracted,
           CASE WHEN s.sign = 1 THEN f.delay_seconds END
    FROM pg_temp.read_model_resolved f
    CROSS JOIN (VALUES (-1), (1)) s (sign)
    WHERE (f.source_id IS NULL OR EXISTS (
        SELECT 1 FROM feedbackflow.feedback_heads h
        WHERE h.target_kind = f.target_kind AND h.join_key = f.join_key
          AND h.metric = f.metric AND h.source_id = f.source_id
          AND h.feedback_id = f.feedback_id));
    UPDATE feedbackflow.feedback_heads h SET
        status = f.status, application = f.application, model = f.model,
        delay_seconds = f.delay_seconds
    FROM pg_temp.read_model_resolved f
    WHERE h.target_kind = f.target_kind AND h.join_key = f.join_key
      AND h.metric = f.metric AND h.source_id = f.source_id AND h.feedback_id = f.feedback_id;

    -- New feedback without a source id: added.
    INSERT INTO pg_temp.read_model_contributions
    SELECT 1, f.ts, f.metric, f.metric_type, f.application, f.model, f.source_type, f.status,
           f.value_bool, f.value_float, f.value_text, f.has_error, f.retracted,
           f.delay_seconds
    FROM pg_temp.read_model_changes f
    WHERE f.source_id IS NULL;

    -- New revisions: per key the latest, if later than the head (latest ts, then feedback id).
    -- One probe of the head per key: what it supersedes leaves (-1) and it comes in (1).  Heads
    -- that are no rating, before or after, are replaced or added in the same statement; those
    -- of ratings go through the work table (with whether each replaces a head or adds one), so
    -- that their items' ratings are read before the heads change and after.
    -- (Sorted bytewise, COLLATE "C": the order only groups equal keys, and a libc collation
    -- compares through strcoll without abbreviated keys.)
    WITH latest AS (
        SELECT DISTINCT ON (target_kind COLLATE "C", join_key COLLATE "C", metric COLLATE "C",
                            source_id COLLATE "C") *
        FROM pg_temp.read_model_changes
        WHERE source_id IS NOT NULL
        ORDER BY target_kind COLLATE "C", join_key COLLATE "C", metric COLLATE "C",
                 source_id COLLATE "C", ts DESC, feedback_id DESC
    ), probed AS MATERIALIZED (
        SELECT w.target_kind, w.join_key, w.metric, w.source_id, w.feedback_id, w.ts,
               w.metric_type, w.application, w.model, w.source_type, w.status, w.value_bool,
               w.value_float, w.value_text, w.has_error, w.retracted, w.delay_seconds,
               h.target_kind IS NOT NULL AS replaces, h.ts AS old_ts,
               h.metric_type AS old_metric_type, h.application AS old_application,
               h.model AS old_model, h.source_type AS old_source_type, h.status AS old_status,
               h.value_bool AS old_value_bool, h.value_float AS old_value_float,
               h.value_text AS old_value_text, h.has_error AS old_has_error,
               h.retracted AS old_retracted, h.delay_seconds AS old_delay_seconds,
               w.metric_type IN ('boolean', 'categorical')
                   OR coalesce(h.metric_type IN ('boolean', 'categorical'), false) AS rated
        FROM latest w
        LEFT JOIN feedbackflow.feedback_heads h
          ON h.target_kind = w.target_kind AND h.join_key = w.join_key
         AND h.metric = w.metric AND h.source_id = w.source_id
        WHERE h.target_kind IS NULL OR (h.ts, h.feedback_id) < (w.ts, w.feedback_id)
    ), noted AS (
        INSERT INTO pg_temp.read_model_new_heads
        SELECT target_kind, join_key, metric, source_id, feedback_id, ts, metric_type,
               application, model, source_type, status, value_bool, value_float, value_text,
               has_error, retracted, delay_seconds, replaces
        FROM probed WHERE rated
    ), replaced AS (
        UPDATE feedbackflow.feedback_heads h SET
            feedback_id = n.feedback_id, ts = n.ts, metric_type = n.metric_type,
            application = n.application, model = n.model, source_type = n.source_type,
            status = n.status, value_bool = n.value_bool, value_float = n.value_float,
            value_text = n.value_text, has_error = n.has_error, retracted = n.retracted,
            delay_seconds = n.delay_seconds
        FROM probed n
        WHERE n.replaces AND NOT n.rated AND h.target_kind = n.target_kind
          AND h.join_key = n.join_key AND h.metric = n.metric AND h.source_id = n.source_id
    ), added AS (
        INSERT INTO feedbackflow.feedback_heads
        SELECT target_kind, join_key, metric, source_id, feedback_id, ts, metric_type,
               application, model, source_type, status, value_bool, value_float, value_text,
               has_error, retracted, delay_seconds
        FROM probed WHERE NOT replaces AND NOT rated
    )
    INSERT INTO pg_temp.read_model_contributions
    SELECT -1, old_ts, metric, old_metric_type, old_application, old_model, old_source_type,
           old_status, old_value_bool, old_value_float, old_value_text, old_has_error,
           old_retracted, old_delay_seconds
    FROM probed WHERE replaces
    UNION ALL
    SELECT 1, ts, metric, metric_type, application, model, source_type, status, value_bool,
           value_float, value_text, has_error, retracted, delay_seconds
    FROM probed;

    -- The heads of ratings replaced, or added (windows hold the resolution lock: no other
    -- writer).
    PERFORM feedbackflow.read_model_note_ratings(-1);
    DELETE FROM feedbackflow.feedback_heads h USING pg_temp.read_model_new_heads n
    WHERE n.replaces AND h.target_kind = n.target_kind AND h.join_key = n.join_key
      AND h.metric = n.metric AND h.source_id = n.source_id;
    INSERT INTO feedbackflow.feedback_heads
    SELECT target_kind, join_key, metric, source_id, feedback_id, ts, metric_type,
           application, model, source_type, status, value_bool, value_float, value_text,
           has_error, retracted, delay_seconds
    FROM pg_temp.read_model_new_heads;
    PERFORM feedbackflow.read_model_note_ratings(1);

    PERFORM feedbackflow.read_model_note_first_feedback();
    PERFORM feedbackflow.read_model_add_contributions();
    PERFORM feedbackflow.read_model_add_ratings();
    PERFORM feedbackflow.read_model_add_coverage();
END
$$;

-- Everything recomputed from feedback and predictions.  Takes the resolution lock, so that no
-- window changes feedback meanwhile.
CREATE FUNCTION feedbackflow.read_model_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4627188117730549063);
    PERFORM feedbackflow.read_model_work_tables();
    TRUNCATE feedbackflow.feedback_rollup, feedbackflow.feedback_category_rollup,
             feedbackflow.feedback_delay_rollup, feedbackflow.prediction_coverage_rollup,
             feedbackflow.predictions_with_feedback, feedbackflow.feedback_heads,
             feedbackflow.agreement_pair_rollup, feedbackflow.agreement_item_rollup,
             feedbackflow.agreement_category_rollup;
    DELETE FROM pg_temp.read_model_contributions;
    DELETE FROM pg_temp.read_model_ratings;
    DELETE FROM pg_temp.read_model_items;
    DELETE FROM pg_temp.read_model_coverage;

    INSERT INTO feedbackflow.feedback_heads
    SELECT DISTINCT ON (target_kind, join_key, metric, source_id)
           target_kind, join_key, metric, source_id, feedback_id, ts, metric_type,
           application, model, source_type, status, value_bool, value_float, value_text,
           error_code IS NOT NULL,
           value_bool IS NULL AND value_float IS NULL AND value_text IS NULL
               AND value_json IS NULL AND error_code IS NULL,
           delay_seconds
    FROM feedbackflow.feedback
    WHERE source_id IS NOT NULL
    ORDER BY target_kind, join_key, metric, source_id, ts DESC, feedback_id DESC;

    INSERT INTO pg_temp.read_model_contributions
    SELECT 1, ts, metric, metric_type, application, model, source_type, status, value_bool,
           value_float, value_text, has_error, retracted, delay_seconds
    FROM feedbackflow.feedback_heads
    UNION ALL
    SELECT 1, ts, metric, metric_type, application, model, source_type, status, value_bool,
           value_float, value_text, error_code IS NOT NULL,
           value_bool IS NULL AND value_float IS NULL AND value_text IS NULL
               AND value_json IS NULL AND error_code IS NULL,
           delay_seconds
    FROM feedbackflow.feedback
    WHERE source_id IS NULL;

    INSERT INTO pg_temp.read_model_ratings
    SELECT 1, target_kind, join_key, metric, source_id, source_type, feedback_id, ts,
           feedbackflow.read_model_category(metric_type, value_bool, value_text)
    FROM feedbackflow.feedback_heads
    WHERE feedbackflow.read_model_category(metric_type, value_bool, value_text) IS NOT NULL;

    INSERT INTO feedbackflow.predictions_with_feedback (prediction_id, prediction_ts)
    SELECT DISTINCT prediction_id, prediction_ts FROM feedbackflow.feedback
    WHERE status = 'joined' AND prediction_id IS NOT NULL;
    INSERT INTO pg_temp.read_model_coverage
    SELECT ts, application, model, 1, 0 FROM feedbackflow.predictions
    UNION ALL
    SELECT DISTINCT ON (prediction_id, prediction_ts) prediction_ts, application, model, 0, 1
    FROM feedbackflow.feedback
    WHERE status = 'joined' AND prediction_id IS NOT NULL
    ORDER BY 1;

    PERFORM feedbackflow.read_model_add_contributions();
    PERFORM feedbackflow.read_model_add_ratings();
    PERFORM feedbackflow.read_model_add_coverage();
    DELETE FROM pg_temp.read_model_contributions;
    DELETE FROM pg_temp.read_model_ratings;
    DELETE FROM pg_temp.read_model_items;
    DELETE FROM pg_temp.read_model_coverage;
END
$$;

-- Retention: what is older than the first day retention keeps (the day partitions it drops).
CREATE FUNCTION feedbackflow.read_model_trim(kept_from timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM feedbackflow.feedback_rollup WHERE bucket < kept_from;
    DELETE FROM feedbackflow.feedback_category_rollup WHERE bucket < kept_from;
    DELETE FROM feedbackflow.feedback_delay_rollup WHERE bucket < kept_from;
    DELETE FROM feedbackflow.prediction_coverage_rollup WHERE bucket < kept_from;
    DELETE FROM feedbackflow.predictions_with_feedback WHERE prediction_ts < kept_from;
    DELETE FROM feedbackflow.feedback_heads WHERE ts < kept_from;
    DELETE FROM feedbackflow.agreement_pair_rollup WHERE bucket < kept_from;
    DELETE FROM feedbackflow.agreement_item_rollup WHERE bucket < kept_from;
    DELETE FROM feedbackflow.agreement_category_rollup WHERE bucket < kept_from;
END
$$;

-- Comments and demonstrations by time: the latest in a range without reading the range's
-- other feedback (workers.read_model.queries.LATEST_COMMENTS).
CREATE INDEX feedback_comments_ts ON feedbackflow.feedback (ts)
    WHERE metric_type IN ('comment', 'demonstration');

-- The old summary views, now over the rollups (hourly rows; no DISTINCT ON over the history).
DROP VIEW feedbackflow.metric_summary_hourly;
CREATE VIEW feedbackflow.metric_summary_hourly AS
SELECT bucket, metric, application, model,
       sum(feedback_count)::bigint                                   AS feedback_count,
       (sum(feedback_count) FILTER (WHERE status = 'joined'))::bigint AS joined_count,
       (sum(value_sum) / nullif(sum(value_count), 0))::double precision AS mean_value,
       sum(positive_count) / nullif(sum(boolean_count), 0)          AS share_positive,
       sum(error_count)::bigint                                      AS error_count
FROM feedbackflow.feedback_rollup
WHERE grain = '1h'
GROUP BY 1, 2, 3, 4
HAVING sum(feedback_count) <> 0;

DROP VIEW feedbackflow.feedback_delay;
CREATE VIEW feedbackflow.feedback_delay AS
SELECT metric, application, model, joined_count,
       q[1] AS p50_seconds, q[2] AS p90_seconds, q[3] AS p99_seconds
FROM (SELECT metric, application, model, sum(feedback_count)::bigint AS joined_count,
             feedbackflow.histogram_quantiles(
                 ARRAY[0.5, 0.9, 0.99], array_agg(le_seconds ORDER BY le_seconds),
                 array_agg(feedback_count::numeric ORDER BY le_seconds)) AS q
      FROM (SELECT metric, application, model, le_seconds, sum(feedback_count) AS feedback_count
            FROM feedbackflow.feedback_delay_rollup WHERE grain = '1d'
            GROUP BY 1, 2, 3, 4) bins
      GROUP BY 1, 2, 3
      HAVING sum(feedback_count) <> 0) h;

-- Helper tables the dashboards do not read.
REVOKE ALL ON feedbackflow.feedback_heads, feedbackflow.predictions_with_feedback
    FROM feedbackflow_reader;

-- Fill from what is already stored.
SELECT feedbackflow.read_model_rebuild();
