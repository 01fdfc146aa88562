"""The README's "Backfill and export" works as written: its backfill session runs against the
suite's broker, a worker and the test's database (named in the environment, as `feedbackflow
dev` prints them), then its export session reads back what landed; and the report session of
"Dashboards" draws it."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pyarrow.parquet as pq
from matplotlib.image import imread

from ingest.metrics.registry import load_registry
from tests.integration.harness import (
    committed_to_the_end,
    isolated_settings,
    make_topics,
    running_worker,
    wait_for_count,
    wait_until,
)
from tests.integration.test_readme_examples import (
    REPOSITORY_CONFIG,
    _block,
    run_shell_session,
)
from workers.devstack.servers import TansuBroker
from workers.settings import Settings


async def _run(script: str, settings: Settings, folder: Path) -> str:
    env = {
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
        "FEEDBACKFLOW_DATABASE_URL": settings.database_url,
        "FEEDBACKFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "FEEDBACKFLOW_CONFIG": str(REPOSITORY_CONFIG),
    }
    return await run_shell_session(script, env, cwd=folder)


async def test_the_readme_backfill_and_export_work_as_written(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings)
    async with running_worker(settings, load_registry(REPOSITORY_CONFIG)):
        said = await _run(_block("sh", "feedbackflow backfill"), settings, tmp_path)
        assert "predictions.jsonl: 2 rows ok (2 predictions, 0 feedback) checked; 0 bad" in said
        assert "predictions.jsonl: 2 rows ok (2 predictions, 0 feedback) published; 0 bad" in said
        assert "thumbs.csv: 2 rows ok (0 predictions, 2 feedback) written; 1 bad" in said
        assert "1 bad: value: metric 'haiku_rating' is boolean; got a string (line 4)" in said
        await wait_until(lambda: committed_to_the_end(settings), within=60, what="the worker")
        joined = "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'"
        await wait_for_count(db, joined, 2)

    said = await _run(_block("sh", "feedbackflow export"), settings, tmp_path)
    listed = [json.loads(line) for line in said.splitlines()]
    # Both rated at one time: in feedback id order, which is derived from their content.
    assert sorted((r["target"], r["value"], r["source_id"]) for r in listed) == [
        ("req-1", True, "ann-1"),
        ("req-2", False, "ann-1"),
    ]
    table = pq.read_table(tmp_path / "thumbs.parquet").to_pylist()
    assert sorted(r["outputs"] for r in table) == [
        '{"content":"snow snow snow snow snow"}',
        '{"content":"soft rain on the roof"}',
    ]
    liked = [json.loads(line) for line in (tmp_path / "liked.jsonl").read_text().splitlines()]
    assert liked == [
        {
            "messages": [
                {"role": "user", "content": "a haiku about rain"},
                {"role": "assistant", "content": "soft rain on the roof"},
            ]
        }
    ]

    # "The report, without Grafana": both commands draw what the backfill wrote.
    said = await _run(_block("sh", "feedbackflow report"), settings, tmp_path)
    assert said.splitlines() == ["report: haiku-report.png", "report: week.png"]
    for drawn in ("haiku-report.png", "week.png"):
        assert imread(tmp_path / drawn).shape == (900, 1500, 4)
