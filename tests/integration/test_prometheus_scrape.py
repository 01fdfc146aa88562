"""A real Prometheus (Debian's package, installed by deploy/dev/ensure-prometheus) scrapes the
worker process, and the counters it stores agree with what the worker wrote to Postgres.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration.harness import (
    PROCESS_CONFIG,
    isolated_settings,
    make_topics,
    producer,
    start_worker_process,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker, free_port, wait_for_port

StartPrometheus = Callable[[int], int]


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[StartPrometheus]:
    """Starts Prometheus scraping a worker port every second; returns Prometheus' own port."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs it (deploy/dev/ensure-prometheus)"
    processes: list[subprocess.Popen[bytes]] = []

    def start(worker_port: int) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: feedbackflow\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{worker_port}']\n"
        )
        with (tmp_path / "prometheus.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=log,
                )
            )
        wait_for_port(port, timeout=30, proc=processes[-1])
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _query(prometheus_port: int, expression: str) -> float | None:
    query = urllib.parse.urlencode({"query": expression})
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/query?{query}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.load(response)
    except OSError:
        return None
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_scrapes_the_counts_the_worker_wrote(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
    start_prometheus: StartPrometheus,
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url).model_copy(
        update={"http_port": free_port()}
    )
    topics = await make_topics(settings)
    config = tmp_path / "feedbackflow.toml"
    config.write_text(PROCESS_CONFIG)
    worker_processes.append(start_worker_process(settings, config, tmp_path / "worker.log"))
    prometheus_port = await asyncio.to_thread(start_prometheus, settings.http_port)
    predictions = 50
    async with producer(settings) as ff:
        for _ in range(predictions):
            prediction = await ff.log_prediction(application="generate_haiku")
            await ff.log_feedback(
                metric="haiku_rating", prediction_id=prediction.prediction_id, value=True
            )
        await ff.send_raw(topics.feedback, b"k", b"not json")
        await ff.flush()
    await wait_for_count(
        db,
        "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'",
        predictions,
        within=60,
    )
    expected = {
        "sum(feedbackflow_events_consumed_total)": 2 * predictions + 1,
        "sum(feedbackflow_predictions_written_total)": predictions,
        'sum(feedbackflow_feedback_resolved_total{status="joined"})': predictions,
        'sum(feedbackflow_dead_letters_total{field="(payload)"})': 1,
        'up{job="feedbackflow"}': 1,
    }
    seen: dict[str, float | None] = {}

    async def scraped() -> bool:
        for expression in expected:
            seen[expression] = await asyncio.to_thread(_query, prometheus_port, expression)
        return all(seen[e] == v for e, v in expected.items())

    try:
        await wait_until(scraped, within=60, what="Prometheus to scrape the worker's counts")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen}") from None
