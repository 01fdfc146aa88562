"""A database of known shape for the read model's bench: feedback filled by SQL
``generate_series`` over some days (10M rows through the pipeline would take hours on the bench
machine; docs/performance.md), then the read model rebuilt from it.

Four feedback per prediction, by id: a boolean ``helpful`` from an LLM judge and from one of
five humans (agreement), a float ``score`` from end users without a source id, and a categorical
``tone`` from a human, or every 25th prediction a ``comment``.  One prediction in twenty has its
feedback pending, one in twenty expired; every tenth judge rating is revised a minute later.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import asyncpg

from bench.ceilings import ensure_days
from workers.postgres import read_model_sql

# $1: feedback rows, $2: the end of the span, $3: its length.
FILL = """
INSERT INTO feedbackflow.predictions
    (prediction_id, join_key, ts, application, model, inputs, outputs, tags, ingested_at)
SELECT md5('p' || i)::uuid, md5('p' || i)::uuid::text,
       $2::timestamptz - $3::interval + (i * $3::interval / ($1::int / 4)),
       'app-' || (i % 2), 'model-' || (i % 3),
       jsonb_build_object('topic', 'rain ' || i), jsonb_build_object('haiku', 'dusk ' || i),
       '{}', $2::timestamptz
FROM generate_series(0, $1::int / 4 - 1) AS i;

INSERT INTO feedbackflow.feedback
    (feedback_id, join_key, ts, metric, metric_type, target_kind, target_prediction_id,
     value_bool, value_float, value_text, source_type, source_id, tags, metadata, ingested_at,
     status, status_reason, prediction_id, application, model, prediction_ts, delay_seconds)
SELECT md5('f' || i)::uuid, p.prediction_id::text, f.ts, f.metric, f.metric_type,
       'prediction_id', p.prediction_id,
       CASE WHEN f.metric = 'helpful' THEN (i * 7) % 10 < 6 END,
       CASE WHEN f.metric = 'score' THEN ((i * 13) % 50) / 10.0 END,
       CASE f.metric WHEN 'tone' THEN (ARRAY['warm', 'neutral', 'cold'])[1 + (i * 11) % 3]
                     WHEN 'comment' THEN 'comment ' || i END,
       f.source_type, f.source_id, '{}', '{}', $2::timestamptz,
       s.status, CASE WHEN s.status = 'expired' THEN 'no_prediction_within_retention' END,
       CASE WHEN s.status = 'joined' THEN p.prediction_id END,
       CASE WHEN s.status = 'joined' THEN p.application END,
       CASE WHEN s.status = 'joined' THEN p.model END,
       CASE WHEN s.status = 'joined' THEN p.ts END,
       CASE WHEN s.status = 'joined' THEN extract(epoch FROM f.ts - p.ts) END
FROM generate_series(0, $1::int - 1) AS i
JOIN feedbackflow.predictions p
  ON p.prediction_id = md5('p' || (i / 4))::uuid
 AND p.ts = $2::timestamptz - $3::interval + ((i / 4) * $3::interval / ($1::int / 4))
CROSS JOIN LATERAL (SELECT CASE (i / 4) % 20 WHEN 0 THEN 'pending' WHEN 1 THEN 'expired'
                                ELSE 'joined' END AS status) s
CROSS JOIN LATERAL (
    SELECT least(p.ts + ((i::bigint * 7919) % 172800) * interval '1 second'
                      + CASE WHEN i % 40 = 0 THEN interval '1 minute' ELSE '0' END,
                 $2::timestamptz - interval '1 second') AS ts,
           CASE i % 4 WHEN 0 THEN 'helpful' WHEN 1 THEN 'helpful' WHEN 2 THEN 'score'
                      ELSE CASE WHEN (i / 4) % 25 = 0 THEN 'comment' ELSE 'tone' END
           END AS metric,
           CASE i % 4 WHEN 0 THEN 'boolean' WHEN 1 THEN 'boolean' WHEN 2 THEN 'float'
                      ELSE CASE WHEN (i / 4) % 25 = 0 THEN 'comment' ELSE 'categorical' END
           END AS metric_type,
           CASE i % 4 WHEN 0 THEN 'llm_judge' WHEN 2 THEN 'end_user' ELSE 'human' END
               AS source_type,
           CASE i % 4 WHEN 0 THEN 'judge-1' WHEN 2 THEN NULL ELSE 'human-' || ((i / 4) % 5) END
               AS source_id) f;

-- Every tenth judge rating revised a minute later (the other value).
INSERT INTO feedbackflow.feedback
    (feedback_id, join_key, ts, metric, metric_type, target_kind, target_prediction_id,
     value_bool, source_type, source_id, tags, metadata, ingested_at, status, prediction_id,
     application, model, prediction_ts, delay_seconds)
SELECT md5('r' || f.feedback_id)::uuid, f.join_key, f.ts + interval '1 minute', f.metric,
       f.metric_type, f.target_kind, f.target_prediction_id, NOT f.value_bool, f.source_type,
       f.source_id, '{}', '{}', $2::timestamptz, f.status, f.prediction_id, f.application,
       f.model, f.prediction_ts, f.delay_seconds + 60
FROM feedbackflow.feedback f
WHERE f.source_id = 'judge-1' AND f.ts < $2::timestamptz - interval '1 minute'
  AND get_byte(decode(md5(f.feedback_id::text), 'hex'), 0) < 26 AND $1::int > 0
  AND $3::interval > '0';

INSERT INTO feedbackflow.pending_feedback (feedback_id, join_key, ts, target_prediction_id)
SELECT feedback_id, join_key, ts, target_prediction_id FROM feedbackflow.feedback
WHERE status = 'pending';
"""


async def fill(conn: asyncpg.Connection, feedback: int, end: datetime, span: timedelta) -> float:
    """``feedback`` rows (a multiple of 4) over ``span`` before ``end``, then the rebuild;
    returns the rebuild's seconds."""
    days = {(end - span + timedelta(days=d)).date() for d in range(span.days + 2)}
    await ensure_days(conn, ("predictions", "feedback"), days)
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        *statements, queue = FILL.split(";\n\n")
        for statement in statements:
            await conn.execute(statement, feedback, end, span)
        await conn.execute(queue)
    await conn.execute("ANALYZE feedbackflow.predictions, feedbackflow.feedback")
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute(read_model_sql.REBUILD)
    rebuild = time.perf_counter() - started
    await conn.execute("VACUUM ANALYZE")
    return rebuild
