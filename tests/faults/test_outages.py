"""Outages are waited out, not died of: PostgreSQL stopped for a minute, the broker cut off for
half a minute.  The worker runs as the real process (``feedbackflow worker``); afterwards every
event sent is in Postgres exactly once, and the worker never exited.

How long each outage lasts is the scenario, not a wait for something: FEEDBACKFLOW_FAULT_*
shorten them for a quick local run.  Figures: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

from tests.faults.servers import OwnedPostgres, broker_behind_proxy
from tests.integration.harness import (
    committed_to_the_end,
    count,
    process_settings,
    producer,
    start_worker_process,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker, create_database
from workers.postgres.migrate import migrate
from workers.settings import Settings

POSTGRES_DOWN_SECONDS = float(os.environ.get("FEEDBACKFLOW_FAULT_POSTGRES_SECONDS", "60"))
BROKER_CUT_SECONDS = float(os.environ.get("FEEDBACKFLOW_FAULT_BROKER_SECONDS", "30"))
CONFIG = """
[pipeline]
window = "1s"

[metrics.haiku_rating]
type = "boolean"
"""
# During an outage the test samples the worker (alive? /health?) this often; the outage's
# length is the scenario, so the loop runs for it rather than waiting for a condition.
SAMPLE_EVERY = 1.0
JOINED = "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'"
PER_BATCH = 300


def health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


async def send_batch(settings: Settings) -> None:
    async with producer(settings) as ff:
        for _ in range(PER_BATCH):
            prediction = await ff.log_prediction(application="generate_haiku")
            await ff.log_feedback(
                metric="haiku_rating", prediction_id=prediction.prediction_id, value=True
            )
        await ff.flush()


async def exactly_once(db: asyncpg.Connection, batches: int) -> None:
    total = batches * PER_BATCH
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == total
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == total
    assert await count(db, JOINED) == total
    distinct = "SELECT count(DISTINCT feedback_id) FROM feedbackflow.feedback"
    assert await count(db, distinct) == total


async def stays_unhealthy(port: int, seconds: float, process: subprocess.Popen[bytes]) -> set[str]:
    """Check once a second for ``seconds`` that the worker runs and /health says 503: the
    reasons it gave."""
    reasons: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker exited during the outage"
        status, body = await asyncio.to_thread(health, port)
        if status:
            assert status == 503, body
            reasons.add(str(body["detail"]).split(":")[0])
        await asyncio.sleep(SAMPLE_EVERY)
    return reasons


async def test_postgres_stopped_for_a_minute_is_waited_out(
    kafka: TansuBroker, tmp_path: Path, worker_processes: list[subprocess.Popen[bytes]]
) -> None:
    postgres = await asyncio.to_thread(OwnedPostgres.create)
    try:
        database_url = await create_database(postgres.url, "outage")
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        settings = await process_settings(kafka.bootstrap, database_url)
        config = tmp_path / "feedbackflow.toml"
        config.write_text(CONFIG)
        worker = start_worker_process(settings, config, tmp_path / "worker.log")
        worker_processes.append(worker)
        db = await asyncpg.connect(database_url)
        try:
            await send_batch(settings)
            await wait_for_count(db, JOINED, PER_BATCH, within=60)
        finally:
            await db.close()

        await asyncio.to_thread(postgres.stop)
        await send_batch(settings)  # read, held in its bounded window, not writable
        await wait_until(
            lambda: _unhealthy(settings.http_port), within=30, what="/health to say 503"
        )
        reasons = await stays_unhealthy(settings.http_port, POSTGRES_DOWN_SECONDS, worker)
        assert "write failing for" in " ".join(reasons)

        await asyncio.to_thread(postgres.start)
        back = time.monotonic()
        db = await asyncpg.connect(database_url)
        try:
            await wait_for_count(db, JOINED, 2 * PER_BATCH, within=60)
            recovered = time.monotonic() - back
            await wait_until(lambda: committed_to_the_end(settings), within=30, what="commits")
            await exactly_once(db, batches=2)
        finally:
            await db.close()
        assert worker.poll() is None
        await wait_until(lambda: _healthy(settings.http_port), within=30, what="/health 200")
        print(f"postgres down {POSTGRES_DOWN_SECONDS:.0f}s: all written {recovered:.1f}s after")
    finally:
        await asyncio.to_thread(postgres.remove)


async def test_the_broker_cut_off_for_half_a_minute_is_waited_out(
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    async with broker_behind_proxy() as (proxy, bootstrap):
        settings = await process_settings(bootstrap, database_url)
        config = tmp_path / "feedbackflow.toml"
        config.write_text(CONFIG)
        worker = start_worker_process(settings, config, tmp_path / "worker.log")
        worker_processes.append(worker)
        await send_batch(settings)
        await wait_for_count(db, JOINED, PER_BATCH, within=60)

        proxy.cut()  # idle: nothing to commit, and still it must say the broker is away
        await wait_until(
            lambda: _unhealthy(settings.http_port), within=30, what="/health to say 503"
        )
        reasons = await stays_unhealthy(settings.http_port, BROKER_CUT_SECONDS, worker)
        assert "broker failing for" in " ".join(reasons), reasons
        proxy.restore()
        back = time.monotonic()

        await send_batch(settings)
        await wait_for_count(db, JOINED, 2 * PER_BATCH, within=90)
        recovered = time.monotonic() - back
        await wait_until(lambda: committed_to_the_end(settings), within=60, what="commits")
        await exactly_once(db, batches=2)
        assert worker.poll() is None
        print(
            f"broker cut {BROKER_CUT_SECONDS:.0f}s: the next batch written {recovered:.1f}s after"
        )


async def _unhealthy(port: int) -> bool:
    return (await asyncio.to_thread(health, port))[0] == 503


async def _healthy(port: int) -> bool:
    return (await asyncio.to_thread(health, port))[0] == 200
