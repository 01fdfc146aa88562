"""Backfill over the real broker, worker and Postgres: predictions and feedback backfilled in
either order, through Kafka or ``--direct``, export the same bytes; a second run changes
nothing; a run killed mid-file resumes to exact counts; bad rows are named with their lines."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.backfill.mapping import ColumnMapping
from ingest.backfill.run import BackfillOptions, backfill
from tests.conftest import PostgresServer
from tests.integration.harness import (
    committed_to_the_end,
    count,
    isolated_settings,
    make_topics,
    metric_registry,
    producer,
    running_worker,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker, database_url_with_name
from workers.export.run import ExportOptions, export
from workers.read_model.current_feedback import FeedbackFilter
from workers.settings import Settings

NewDatabase = Callable[[], Awaitable[str]]
PREDICTIONS = 40
# Feedback for this join key names no prediction: pending, whatever the path and order.
ORPHAN = "req-orphan"

CONFIG = """
[metrics.haiku_rating]
type = "boolean"
level = "inference"

[metrics.haiku_score]
type = "float"
min = 1
max = 5
"""


@pytest.fixture
def new_database(postgres: PostgresServer) -> NewDatabase:
    """More fresh, migrated databases for one test (dropped with the session's)."""

    async def make() -> str:
        name = f"ff_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(postgres.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres.template}"')
        finally:
            await conn.close()
        return database_url_with_name(postgres.admin_url, name)

    return make


def write_sample(folder: Path, now: datetime) -> tuple[Path, Path, Path]:
    """Predictions as JSONL; ratings, a revision and a comment as CSV under other names;
    scores as Parquet naming predictions by id -- none of them with ids of their own."""
    start = (now - timedelta(days=10)).replace(microsecond=0)
    predictions = folder / "predictions.jsonl"
    with predictions.open("w") as out:
        for i in range(PREDICTIONS):
            chat = {"messages": [{"role": "user", "content": f"a haiku about {i}"}]}
            out.write(
                json.dumps(
                    {
                        "join_key": f"req-{i}",
                        "application": "generate_haiku",
                        "model": "haiku-a" if i % 2 else "haiku-b",
                        "inputs": chat,
                        "outputs": {"content": f"haiku {i}"},
                        "tags": {"team": "poetry"},
                        "timestamp": (start + timedelta(minutes=i)).isoformat(),
                    }
                )
                + "\n"
            )
    ratings = folder / "ratings.csv"
    with ratings.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["request", "thumbs", "rated_at", "annotator", "note"])
        for i in range(PREDICTIONS):
            at = start + timedelta(hours=1, minutes=i)
            writer.writerow([f"req-{i}", "yes" if i % 3 else "no", at.isoformat(), "ann-1", ""])
        # ann-1 changes their mind on req-0 a day later: the revision is the current value.
        writer.writerow(["req-0", "yes", (start + timedelta(days=1)).isoformat(), "ann-1", ""])
        writer.writerow([ORPHAN, "no", start.isoformat(), "ann-2", "who?"])
    scores = folder / "scores.parquet"
    return predictions, ratings, scores


def write_scores(path: Path, prediction_ids: list[str], now: datetime) -> None:
    at = (now - timedelta(days=5)).replace(microsecond=0)
    pq.write_table(
        pa.table(
            {
                "prediction_id": prediction_ids,
                "metric": ["haiku_score"] * len(prediction_ids),
                "value": [float(1 + i % 5) for i in range(len(prediction_ids))],
                "timestamp": pa.array([at] * len(prediction_ids), pa.timestamp("us", tz="UTC")),
            }
        ),
        path,
    )


RATINGS_MAPPING = ColumnMapping.build(
    maps=[
        "join_key=request",
        "value=thumbs",
        "timestamp=rated_at",
        "source.id=annotator",
        "rationale=note",
    ],
    sets=["metric=haiku_rating", "source.type=human"],
)


def options(path: Path, direct: bool, mapping: ColumnMapping | None = None) -> BackfillOptions:
    return BackfillOptions(
        files=[path], mapping=mapping or ColumnMapping(), direct=direct, progress=False
    )


async def exported(database_url: str, folder: Path, name: str) -> tuple[bytes, bytes]:
    jsonl, parquet = folder / f"{name}.jsonl", folder / f"{name}.parquet"
    everything = FeedbackFilter()
    await export(database_url, ExportOptions(everything, output=jsonl, with_predictions=True))
    await export(
        database_url,
        ExportOptions(everything, fmt="parquet", output=parquet, with_predictions=True),
    )
    return jsonl.read_bytes(), parquet.read_bytes()


async def prediction_ids(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT prediction_id FROM feedbackflow.predictions ORDER BY ts")
    finally:
        await conn.close()
    return [str(r["prediction_id"]) for r in rows]


async def test_both_orders_and_both_paths_export_the_same_bytes_and_reruns_change_nothing(
    kafka: TansuBroker, new_database: NewDatabase, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    predictions, ratings, scores = write_sample(tmp_path, now)
    registry = metric_registry()
    # The scores name predictions by id: ids derived from content, the same in every database.
    first = isolated_settings(kafka.bootstrap, await new_database())
    assert await backfill(first, registry, options(predictions, direct=True)) == 0
    write_scores(scores, (await prediction_ids(first.database_url))[::2], now)
    files: Files = [(predictions, None), (ratings, RATINGS_MAPPING), (scores, None)]

    forward, backward = files, files[::-1]
    exports = []
    for name, direct, order in (
        ("direct-forward", True, forward),
        ("direct-backward", True, backward),
        ("kafka-forward", False, forward),
        ("kafka-backward", False, backward),
    ):
        settings = isolated_settings(kafka.bootstrap, await new_database())
        await _load(settings, order, direct)
        exports.append(await exported(settings.database_url, tmp_path, name))
        if name in ("direct-forward", "kafka-backward"):
            await _load(settings, order, direct)  # again, the same way: nothing changes
            assert await exported(settings.database_url, tmp_path, f"{name}-again") == exports[-1]
    assert all(e == exports[0] for e in exports[1:])

    rows = [json.loads(line) for line in exports[0][0].splitlines()]
    # 41 ratings' current values (req-0 revised), 20 scores.
    assert len(rows) == PREDICTIONS + 1 + PREDICTIONS // 2
    statuses = {r["target"]: r["status"] for r in rows if r["metric"] == "haiku_rating"}
    assert statuses[ORPHAN] == "pending"
    assert {s for t, s in statuses.items() if t != ORPHAN} == {"joined"}
    revised = [r for r in rows if r["target"] == "req-0"]
    assert [r["value"] for r in revised] == [True]
    assert revised[0]["inputs"] == {"messages": [{"role": "user", "content": "a haiku about 0"}]}


Files = list[tuple[Path, ColumnMapping | None]]


async def _load(settings: Settings, order: Files, direct: bool) -> None:
    """The files in order; through Kafka each lands before the next is published, so the order
    is the order stored."""
    registry = metric_registry()
    if direct:
        for path, mapping in order:
            assert await backfill(settings, registry, options(path, True, mapping)) == 0
        return
    await make_topics(settings)
    async with running_worker(settings, registry):
        for path, mapping in order:
            assert await backfill(settings, registry, options(path, False, mapping)) == 0
            await wait_until(
                lambda: committed_to_the_end(settings), within=90, what="the worker to catch up"
            )


SIGKILL_ROWS = 3000
# The suite's broker (tansu) has no InitProducerId: idempotence off, as `feedbackflow dev` says.
TEST_ENV = {**os.environ, "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false"}


async def run_command(command: list[str]) -> tuple[int, str]:
    """The command's exit code and standard output (its standard error folded in)."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=TEST_ENV
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode()


def write_history(folder: Path) -> Path:
    """SIGKILL_ROWS predictions without ids, then one bad line."""
    start = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    source = folder / "history.jsonl"
    with source.open("w") as out:
        for i in range(SIGKILL_ROWS):
            at = (start + timedelta(seconds=i)).isoformat()
            out.write(json.dumps({"application": "a", "join_key": f"k{i}", "timestamp": at}) + "\n")
        out.write("not json\n")
    return source


async def kill_midway(command: list[str], folder: Path) -> int:
    """Run the backfill and SIGKILL it once 500 rows are durable; the rows its checkpoint
    says are."""
    checkpoint = folder / "history.jsonl.backfill-checkpoint.json"
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=TEST_ENV
    )
    try:

        async def some_rows_are_durable() -> bool:
            if not checkpoint.exists():
                return False
            return int(json.loads(checkpoint.read_text())["rows_done"]) >= 500

        await wait_until(some_rows_are_durable, within=60, what="a checkpoint of 500 rows")
        process.send_signal(signal.SIGKILL)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    done = int(json.loads(checkpoint.read_text())["rows_done"])
    assert done < SIGKILL_ROWS, "the run ended before it was killed"
    return done


async def resume(command: list[str], folder: Path) -> str:
    """The same command again, to its end; its output."""
    checkpoint = folder / "history.jsonl.backfill-checkpoint.json"
    returncode, stdout = await run_command(command)
    assert returncode == 1, stdout  # the bad line
    assert not checkpoint.exists()
    rejects = (folder / "history.jsonl.rejects.jsonl").read_text().splitlines()
    assert [json.loads(line)["line"] for line in rejects] == [SIGKILL_ROWS + 1]
    return stdout


def backfill_command(folder: Path, settings: Settings, *flags: str) -> list[str]:
    config = folder / "feedbackflow.toml"
    config.write_text(CONFIG)
    return [
        *(sys.executable, "-m", "workers.cli", "backfill", *flags),
        *("--batch-rows", "100", "--rate", "2000", "--config", str(config)),
        *("--database-url", settings.database_url, "--kafka-bootstrap", settings.kafka_bootstrap),
        *("--topic-prefix", settings.topic_prefix, str(folder / "history.jsonl")),
    ]


async def test_a_direct_backfill_killed_mid_file_resumes_to_exact_counts(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    write_history(tmp_path)
    settings = isolated_settings("127.0.0.1:1", database_url)
    command = backfill_command(tmp_path, settings, "--direct")

    async def stored() -> int:
        return await count(db, "SELECT count(*) FROM feedbackflow.predictions")

    done = await kill_midway(command, tmp_path)
    assert done <= await stored() < SIGKILL_ROWS
    said = await resume(command, tmp_path)
    assert f"{SIGKILL_ROWS} rows ok ({SIGKILL_ROWS} predictions, 0 feedback) written; 1 bad" in (
        said
    )
    assert "(line 3001)" in said
    assert await stored() == SIGKILL_ROWS


async def test_a_backfill_through_kafka_killed_mid_file_resumes_to_exact_counts(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    write_history(tmp_path)
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings)
    async with running_worker(settings, metric_registry()):
        command = backfill_command(tmp_path, settings)
        await kill_midway(command, tmp_path)
        said = await resume(command, tmp_path)
        assert f"{SIGKILL_ROWS} rows ok ({SIGKILL_ROWS} predictions, 0 feedback) published" in said
        await wait_until(lambda: committed_to_the_end(settings), within=90, what="the worker")
    # Rows sent twice (after the checkpoint, before the kill) are one row each in Postgres.
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == SIGKILL_ROWS


async def test_a_dry_run_names_bad_rows_by_reason_and_line_and_writes_nothing(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    source = tmp_path / "mixed.jsonl"
    lines = [
        {"application": "a", "join_key": "k1", "timestamp": now.isoformat()},
        {"metric": "haiku_rating", "join_key": "k1", "value": "yes", "timestamp": now.isoformat()},
        {"application": "a", "timestamp": (now - timedelta(days=120)).isoformat()},
        {"metric": "nope", "join_key": "k1", "value": 1, "timestamp": now.isoformat()},
        {"metric": "haiku_rating", "join_key": "k1", "value": True, "timestamp": now.isoformat()},
        {"application": "a", "timestamp": (now - timedelta(days=100)).isoformat()},
    ]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    config = tmp_path / "feedbackflow.toml"
    config.write_text(CONFIG)
    returncode, out = await run_command(
        [
            *(sys.executable, "-m", "workers.cli", "backfill", "--dry-run"),
            *("--config", str(config), "--database-url", database_url, str(source)),
        ]
    )
    assert returncode == 1
    assert "2 rows ok (1 predictions, 1 feedback) checked; 4 bad" in out
    assert "2 bad: timestamp: older than the retention (line 3, 6)" in out
    assert "1 bad: value: metric 'haiku_rating' is boolean; got a string (line 2)" in out
    assert "1 bad: metric: unknown metric 'nope'" in out
    assert "(line 4)" in out
    assert "2 rows are older than the retention" in out
    rejects = (tmp_path / "mixed.jsonl.rejects.jsonl").read_text().splitlines()
    rejected = [json.loads(line) for line in rejects]
    assert [r["line"] for r in rejected] == [2, 3, 4, 6]
    assert rejected[0]["row"] == lines[1]
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 0
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 0


async def test_a_direct_backfill_between_live_traffic_joins_both_ways(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Live feedback that arrived before the backfilled predictions is joined by the backfill;
    live feedback after it is joined by the worker to the backfilled predictions."""
    now = datetime.now(UTC)
    predictions, _, _ = write_sample(tmp_path, now)
    settings = isolated_settings(kafka.bootstrap, database_url)
    registry = metric_registry()
    await make_topics(settings)
    status = "SELECT count(*) FROM feedbackflow.feedback WHERE status = $1"
    async with running_worker(settings, registry), producer(settings, registry) as ff:
        for i in range(0, PREDICTIONS, 2):
            await ff.log_feedback(metric="haiku_rating", join_key=f"req-{i}", value=True)
        await ff.flush()
        await wait_for_count(db, status, PREDICTIONS // 2, "pending")

        assert await backfill(settings, registry, options(predictions, direct=True)) == 0
        assert await count(db, status, "joined") == PREDICTIONS // 2
        assert await count(db, status, "pending") == 0

        for i in range(1, PREDICTIONS, 2):
            await ff.log_feedback(metric="haiku_rating", join_key=f"req-{i}", value=False)
        await ff.flush()
        await wait_for_count(db, status, PREDICTIONS, "joined")
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == PREDICTIONS


async def test_a_tag_selector_in_a_file_joins_like_the_worker_joins_it(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Selector feedback in a backfill is its own kind of row: keyed by its selector, written
    through the worker's sink, and resolved into one feedback per matching prediction."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    rows = [
        {
            "kind": "prediction",
            "prediction_id": str(uuid.uuid4()),
            "application": "chat",
            "tags": {"session": session},
            "timestamp": now.isoformat(),
        }
        for session in ("s-1", "s-1", "s-2")
    ]
    selector: dict[str, object] = {
        "metric": "haiku_rating",
        "tag_selector": ["session=s-1"],
        "value": True,
        "source": {"type": "human", "id": "ana"},
        "timestamp": (now + timedelta(hours=1)).isoformat(),
    }
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [*rows, selector]))
    settings = isolated_settings("127.0.0.1:1", database_url, selectable_tags=("session",))
    assert await backfill(settings, metric_registry(), options(path, direct=True)) == 0
    joined = await db.fetch(
        "SELECT prediction_id::text AS p FROM feedbackflow.feedback WHERE status = 'joined'"
    )
    s1 = {row["prediction_id"] for row in rows[:2]}
    assert {r["p"] for r in joined} == s1
    status = await db.fetchval("SELECT status FROM feedbackflow.selector_feedback")
    assert status == "joined"
