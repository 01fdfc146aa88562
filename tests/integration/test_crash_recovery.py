"""The worker is killed with SIGKILL in the middle of a window and restarted: nothing is lost and
nothing is duplicated, because offsets are committed only after the window's transaction.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import asyncpg

from tests.integration.harness import (
    PROCESS_CONFIG,
    committed_to_the_end,
    consumed_per_metrics,
    count,
    isolated_settings,
    make_topics,
    producer,
    start_worker_process,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker, free_port


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
    config.write_text(PROCESS_CONFIG)
    log = tmp_path / "worker.log"
    worker_processes.append(start_worker_process(settings, config, log))
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
            return (
                await asyncio.to_thread(consumed_per_metrics, settings.http_port) >= 4 * per_batch
            )

        await wait_until(second_batch_read, within=30, what="the worker to read batch two")
        worker_processes[0].send_signal(signal.SIGKILL)
        worker_processes[0].wait()
        # The window holding batch two was still open: none of it is in Postgres yet.
        assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == per_batch

        worker_processes.append(start_worker_process(settings, config, log))
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
    await wait_until(
        lambda: committed_to_the_end(settings), within=60, what="offsets committed to the end"
    )
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 3 * per_batch
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 3 * per_batch
    assert (
        await count(db, "SELECT count(DISTINCT feedback_id) FROM feedbackflow.feedback")
        == 3 * per_batch
    )
    worker_processes[1].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker_processes[1].wait, 30) == 0
