"""``python -m bench.export_scale [--rows 1000000 10000000]``: ``feedbackflow export`` over
tables of each size, to show that its memory does not grow with the table.

Each size gets a fresh database whose feedback (joined to predictions, a tenth of them revised
by a later value, spread over 30 days) is made by SQL ``generate_series``: loading 10M rows
through Python would take most of the run.  The export runs as its own process; its peak RSS is
its VmHWM (``bench.backfill_export.run_command``).  Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.backfill_export import Run, run_command
from bench.ceilings import ensure_days, recent_days
from bench.infra import running_stack

DAYS = 30

# One prediction per 2 feedback; feedback i names prediction i / 2, by id, joined; every tenth
# prediction's first rating is revised a minute later by the same source.
FILL = f"""
INSERT INTO feedbackflow.predictions
    (prediction_id, join_key, ts, application, model, inputs, outputs, tags, ingested_at)
SELECT md5('p' || i)::uuid, md5('p' || i)::uuid::text,
       now() - interval '{DAYS} days' + (i * interval '{DAYS} days' / $1::int),
       'generate_haiku', 'haiku-' || (i % 2),
       jsonb_build_object('topic', 'rain ' || i), jsonb_build_object('haiku', 'dusk ' || i),
       '{{"env": "bench"}}', now()
FROM generate_series(0, $1::int / 2 - 1) AS i;

INSERT INTO feedbackflow.feedback
    (feedback_id, join_key, ts, metric, metric_type, target_kind, target_prediction_id,
     value_bool, source_type, source_id, tags, metadata, ingested_at, status, prediction_id,
     application, model, prediction_ts, delay_seconds)
SELECT md5('f' || i)::uuid, md5('p' || (i / 2))::uuid::text,
       p.ts + interval '1 hour' + (CASE WHEN i % 20 = 1 THEN interval '1 minute' ELSE '0' END),
       'haiku_rating', 'boolean', 'prediction_id', p.prediction_id,
       i % 3 > 0, 'human', CASE WHEN i % 20 = 1 THEN 'ann-0' ELSE 'ann-' || (i % 2) END,
       '{{}}', '{{}}', now(), 'joined', p.prediction_id, p.application, p.model, p.ts, 3600
FROM generate_series(0, $1::int - 1) AS i
JOIN feedbackflow.predictions p ON p.prediction_id = md5('p' || (i / 2))::uuid
    AND p.ts = now() - interval '{DAYS} days' + ((i / 2) * interval '{DAYS} days' / $1::int);
"""


async def _fill(database_url: str, rows: int) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        await ensure_days(conn, ("predictions", "feedback"), recent_days(DAYS + 1))
        async with conn.transaction():
            # now() is the transaction's start: one value for both statements.
            for statement in FILL.split(";\n\n"):
                await conn.execute(statement, rows)
        await conn.execute("ANALYZE feedbackflow.predictions, feedbackflow.feedback")
        return int(await conn.fetchval("SELECT count(*) FROM feedbackflow.feedback_current"))
    finally:
        await conn.close()


async def bench(sizes: list[int]) -> list[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="ffbench-export-"))
    runs = []
    async with running_stack(with_broker=False) as stack:
        for rows in sizes:
            url = await stack.database(f"export{rows}")
            started = time.perf_counter()
            current = await _fill(url, rows)
            print(
                f"{rows:,} feedback rows made in {time.perf_counter() - started:.0f}s", flush=True
            )
            env = {**os.environ, "FEEDBACKFLOW_DATABASE_URL": url}
            for fmt in ("jsonl", "parquet"):
                out = workdir / f"export.{fmt}"
                command = [sys.executable, "-m", "workers.cli", "export", "-o", str(out)]
                seconds, rss = run_command(command, env)
                runs.append(
                    Run(f"export of {rows:,} feedback rows to {fmt}", current, seconds, rss)
                )
                print(
                    f"{runs[-1].what}: {runs[-1].per_second:,.0f} rows/s, {rss:.0f} MB", flush=True
                )
                out.unlink()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    runs = asyncio.run(bench(args.rows))
    print("| what | current values exported | seconds | rows/s | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| {run.what} | {run.rows:,} | {run.seconds:.1f} | {run.per_second:,.0f} | "
            f"{run.peak_rss_mb:.0f} MB |"
        )


if __name__ == "__main__":
    main()
