"""A real Prometheus (Debian's package, installed by deploy/dev/ensure-prometheus) scrapes the
worker process, and the counters it stores agree with what the worker wrote to Postgres.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg

from ingest.topics import TopicNames
from tests.integration.harness import (
    PROCESS_CONFIG,
    isolated_settings,
    make_topics,
    producer,
    start_worker_process,
    wait_for_count,
    wait_until,
)
from tests.integration.prometheus import instant, running_prometheus, scrape_config
from workers.devstack.servers import TansuBroker, free_port
from workers.settings import Settings


def _scalar(prometheus_port: int, expression: str) -> float | None:
    try:
        result = instant(prometheus_port, expression)
    except OSError:  # not listening yet
        return None
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_scrapes_the_counts_the_worker_wrote(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url).model_copy(
        update={"http_port": free_port()}
    )
    topics = await make_topics(settings)
    config = tmp_path / "feedbackflow.toml"
    config.write_text(PROCESS_CONFIG)
    worker_processes.append(start_worker_process(settings, config, tmp_path / "worker.log"))
    async with running_prometheus(
        scrape_config({"feedbackflow": settings.http_port}), tmp_path
    ) as prometheus_port:
        await _scrape_after_traffic(settings, topics, db, prometheus_port)


async def _scrape_after_traffic(
    settings: Settings, topics: TopicNames, db: asyncpg.Connection, prometheus_port: int
) -> None:
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
            seen[expression] = await asyncio.to_thread(_scalar, prometheus_port, expression)
        return all(seen[e] == v for e, v in expected.items())

    try:
        await wait_until(scraped, within=60, what="Prometheus to scrape the worker's counts")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen}") from None
