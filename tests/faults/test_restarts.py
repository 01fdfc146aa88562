"""Restarts lose and duplicate nothing, and a restarted worker resumes in seconds.

- SIGKILL, then a restart with the same static group member id (``kafka_group_instance_id``):
  writing resumes within the group's session timeout (on Apache Kafka, which honours static
  membership, at once; tansu waits the dead member's session out).
- SIGTERM in the middle of a long window: the window is written before the process exits 0.
- Replay from offset zero into a new consumer group: everything is read again, nothing is
  inserted twice.
Figures: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import asyncpg

from tests.faults.test_outages import JOINED, PER_BATCH, exactly_once, send_batch
from tests.integration.harness import (
    committed_to_the_end,
    consumed_per_metrics,
    process_settings,
    start_worker_process,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker, free_port
from workers.settings import Settings

CONFIG = """
[pipeline]
window = "{window}"

[metrics.haiku_rating]
type = "boolean"
"""


def _start(settings: Settings, tmp_path: Path, window: str) -> subprocess.Popen[bytes]:
    config = tmp_path / f"feedbackflow-{window}.toml"
    config.write_text(CONFIG.format(window=window))
    return start_worker_process(settings, config, tmp_path / "worker.log")


async def test_a_static_member_killed_and_restarted_resumes_in_seconds(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = await process_settings(
        kafka.bootstrap, database_url, kafka_group_instance_id="worker-0"
    )
    worker_processes.append(_start(settings, tmp_path, "1s"))
    await send_batch(settings)
    await wait_for_count(db, JOINED, PER_BATCH, within=60)

    worker_processes[0].send_signal(signal.SIGKILL)
    worker_processes[0].wait()
    await send_batch(settings)
    restarted = time.monotonic()
    worker_processes.append(_start(settings, tmp_path, "1s"))
    await wait_for_count(db, JOINED, 2 * PER_BATCH, within=60)
    resumed = time.monotonic() - restarted
    await wait_until(lambda: committed_to_the_end(settings), within=30, what="commits")
    await exactly_once(db, batches=2)
    # tansu does not honour static membership (Apache Kafka hands a returning static member its
    # partitions at once): here the restart waits for the dead member's session, and no longer.
    session = settings.kafka_session_timeout_ms / 1000
    assert resumed < session + 5, (resumed, session)
    print(f"static member restarted after SIGKILL: writing again {resumed:.1f}s after start")


async def test_sigterm_in_the_middle_of_a_window_writes_it_before_exiting(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = await process_settings(kafka.bootstrap, database_url)
    worker = _start(settings, tmp_path, "10m")  # only the size cap or a stop closes it
    worker_processes.append(worker)
    await send_batch(settings)
    await wait_until(
        lambda: _at_least(consumed_per_metrics(settings.http_port), 2 * PER_BATCH),
        within=60,
        what="the batch read into the window",
    )
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.predictions") == 0
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 60) == 0
    await exactly_once(db, batches=1)
    assert await committed_to_the_end(settings)


async def test_a_replay_from_offset_zero_into_a_new_group_inserts_nothing(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = await process_settings(kafka.bootstrap, database_url)
    worker_processes.append(_start(settings, tmp_path, "1s"))
    await send_batch(settings)
    await wait_for_count(db, JOINED, PER_BATCH, within=60)
    worker_processes[0].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker_processes[0].wait, 60) == 0

    replay = settings.model_copy(
        update={"consumer_group": settings.consumer_group + "-replay", "http_port": free_port()}
    )
    worker_processes.append(_start(replay, tmp_path, "1s"))
    await wait_until(lambda: committed_to_the_end(replay), within=60, what="the replay")
    await exactly_once(db, batches=1)


async def _at_least(value: float, expected: float) -> bool:
    return value >= expected
