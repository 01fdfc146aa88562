"""The worker is killed with SIGKILL in the middle of a window and restarted: nothing is lost and
nothing is duplicated, because offsets are committed only after the window's transaction.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ingest.settings import Settings
from tests.integration.harness import (
    count,
    isolated_settings,
    make_topics,
    producer,
    wait_for_count,
    wait_until,
)
from workers.embedded import TansuBroker, free_port

CONFIG = """
[pipeline]
window = "4s"
retention = "90d"

[metrics.haiku_rating]
type = "boolean"
level = "inference"
"""


def _start_worker(settings: Settings, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FEEDBACKFLOW_DATABASE_URL": settings.database_url,
        "FEEDBACKFLOW_CONFIG": str(config),
        "FEEDBACKFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "FEEDBACKFLOW_CONSUMER_GROUP": settings.consumer_group,
        "FEEDBACKFLOW_HTTP_PORT": str(settings.http_port),
        "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
        "FEEDBACKFLOW_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker"], env=env, stdout=out, stderr=out
        )


def _consumed(port: int) -> float:
    """Messages the worker has read, from its own /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("feedbackflow_events_consumed_total")
    )


@pytest.fixture
def worker_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_sigkill_in_the_middle_of_a_window_loses_and_duplicates_nothing(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url).model_copy(
        update={"http_port": free_port()}
    )
    await make_topics(settings)
    config = tmp_path / "feedbackflow.toml"
    config.write_text(CONFIG)
    log = tmp_path / "worker.log"
    worker_processes.append(_start_worker(settings, config, log))
    per_batch = 400

    async with producer(settings) as ff:

        async def send_batch() -> None:
            for _ in range(per_batch):
                prediction = await ff.log_prediction(application="generate_haiku")
                await ff.log_feedback(
                    metric="haiku_rating", prediction_id=prediction.prediction_id, value=True
                )
            await ff.flush()

        await send_batch()
        await wait_for_count(
            db,
            "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'",
            per_batch,
            within=60,
        )
        await send_batch()

        async def second_batch_read() -> bool:
            return await asyncio.to_thread(_consumed, settings.http_port) >= 4 * per_batch

        await wait_until(second_batch_read, within=30, what="the worker to read batch two")
        worker_processes[0].send_signal(signal.SIGKILL)
        worker_processes[0].wait()
        # The window holding batch two was still open: none of it is in Postgres yet.
        assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == per_batch

        worker_processes.append(_start_worker(settings, config, log))
        await wait_for_count(
            db,
            "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'",
            2 * per_batch,
            within=90,
        )
        await send_batch()  # and it keeps going after the restart
        await wait_for_count(
            db,
            "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'",
            3 * per_batch,
            within=60,
        )
    await asyncio.sleep(1)
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 3 * per_batch
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 3 * per_batch
    assert (
        await count(db, "SELECT count(DISTINCT feedback_id) FROM feedbackflow.feedback")
        == 3 * per_batch
    )
    worker_processes[1].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker_processes[1].wait, 30) == 0
