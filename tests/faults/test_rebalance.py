"""Workers joining and dying in one consumer group while tens of thousands of events stream in:
afterwards every event is in Postgres exactly once.

The stream runs in the background, a thousand events at a time; the group changes under it: a
worker is SIGKILLed and restarted several times, or two workers become three and one dies.
Figures: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import asyncpg

from tests.integration.harness import (
    committed_to_the_end,
    count,
    isolated_settings,
    make_topics,
    producer,
    start_worker_process,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker, free_port
from workers.settings import Settings

CONFIG = """
[pipeline]
window = "1s"

[metrics.haiku_rating]
type = "boolean"
"""
PAIRS = 10_000  # predictions, each with one feedback: 20,000 events
CHUNK = 500
PREDICTIONS = "SELECT count(*) FROM feedbackflow.predictions"


async def stream(settings: Settings, sent: list[int]) -> None:
    async with producer(settings) as ff:
        for _ in range(PAIRS // CHUNK):
            for _ in range(CHUNK):
                prediction = await ff.log_prediction(application="generate_haiku")
                await ff.log_feedback(
                    metric="haiku_rating", prediction_id=prediction.prediction_id, value=True
                )
            await ff.flush()
            sent[0] += CHUNK


def _worker(settings: Settings, tmp_path: Path, n: int) -> subprocess.Popen[bytes]:
    config = tmp_path / "feedbackflow.toml"
    config.write_text(CONFIG)
    mine = settings.model_copy(update={"http_port": free_port()})
    return start_worker_process(mine, config, tmp_path / f"worker{n}.log")


async def _settle_and_count(db: asyncpg.Connection, settings: Settings) -> None:
    await wait_for_count(db, PREDICTIONS, PAIRS, within=120)
    await wait_until(lambda: committed_to_the_end(settings), within=120, what="all committed")
    assert await count(db, PREDICTIONS) == PAIRS
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == PAIRS
    assert await count(db, "SELECT count(DISTINCT feedback_id) FROM feedbackflow.feedback") == PAIRS
    assert (
        await count(db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'")
        == PAIRS
    )


async def test_repeated_sigkill_during_a_stream_loses_and_duplicates_nothing(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings, partitions=4)
    worker_processes.append(_worker(settings, tmp_path, 0))
    sent = [0]
    producing = asyncio.create_task(stream(settings, sent))
    started = time.monotonic()
    for kill in range(3):
        # Kill once a fresh share of the stream has been written, mid-stream.
        await wait_for_count(db, PREDICTIONS, (kill + 1) * PAIRS // 5, within=120)
        worker_processes[-1].send_signal(signal.SIGKILL)
        worker_processes[-1].wait()
        worker_processes.append(_worker(settings, tmp_path, kill + 1))
    await producing
    await _settle_and_count(db, settings)
    print(f"3 SIGKILLs in a {2 * PAIRS}-event stream: exact in {time.monotonic() - started:.0f}s")


async def test_two_workers_become_three_and_one_dies_mid_stream(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings, partitions=4)
    worker_processes += [_worker(settings, tmp_path, n) for n in (0, 1)]
    sent = [0]
    producing = asyncio.create_task(stream(settings, sent))
    started = time.monotonic()
    await wait_for_count(db, PREDICTIONS, PAIRS // 4, within=120)
    worker_processes.append(_worker(settings, tmp_path, 2))  # a third joins
    await wait_for_count(db, PREDICTIONS, PAIRS // 2, within=120)
    worker_processes[0].send_signal(signal.SIGKILL)  # and one dies
    worker_processes[0].wait()
    await producing
    await _settle_and_count(db, settings)
    assert all(p.poll() is None for p in worker_processes[1:])
    took = time.monotonic() - started
    print(f"2 -> 3 workers, one killed, {2 * PAIRS} events: exact in {took:.0f}s")
