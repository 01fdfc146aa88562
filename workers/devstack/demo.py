"""``feedbackflow demo``: the haiku traffic through the whole pipeline on the embedded stack,
then a check that every number sent adds up in Postgres, in its tables and in the read model the
dashboards read, and the report drawn from it.

Predictions and the early feedback go to Kafka through the SDK; the late feedback through the
HTTP gateway (``POST /v1/batch``, auth off as the demo is local), as a browser or a labelling
tool would send it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import uvicorn
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingest.gateway.server import uvicorn_config
from ingest.metrics.registry import MetricRegistry, registry_from_mapping
from ingest.sdk.producer import FeedbackflowProducer
from ingest.topics import TopicNames, create_topics
from ingest.wire.events import Feedback
from workers.devstack.haiku_traffic import DEMO_METRICS, DEMO_PIPELINE, Expected, haiku_traffic
from workers.devstack.servers import free_port
from workers.devstack.stack import embedded_stack
from workers.host.worker import Worker
from workers.postgres.read_model_applier import notes_waiting
from workers.read_model import queries
from workers.read_model.landed import NO_MODEL, Landed, landed, render
from workers.read_model.queries import Selection
from workers.report.command import write_report
from workers.settings import PipelineSettings, Settings, describe_duration


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


async def _read_model_problems(
    conn: asyncpg.Connection, expected: Expected, selection: Selection
) -> list[str]:
    """The read model's own answer (the rollups the windows kept, through the dashboards'
    query) against what was sent: joined feedback per model, share positive, star sums."""
    counts: Counter[tuple[str, str]] = Counter()
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for row in await queries.metric_values(conn, selection):
        pair = (row.model or NO_MODEL, row.metric)
        counts[pair] += row.value_count
        sums[pair] += row.value * row.value_count
    problems = []
    for (model, metric, status), n in expected.status.items():
        if status == "joined" and counts[(model, metric)] != n:
            problems.append(
                f"read model {model} {metric}: {counts[(model, metric)]} values, sent {n}"
            )
    wanted = {**expected.positives, **expected.star_sums}
    for pair, total in wanted.items():
        if abs(sums[pair] - total) > 1e-6:
            problems.append(f"read model {pair}: sum {sums[pair]}, sent {total}")
    return problems


# Feedback per POST /v1/batch.
BATCH = 500


async def _through_the_gateway(
    live: Settings, registry: MetricRegistry, feedback: list[Feedback]
) -> None:
    gateway = live.gateway.model_copy(update={"auth": False, "port": free_port()})
    server = uvicorn.Server(uvicorn_config(live.model_copy(update={"gateway": gateway}), registry))
    serving = asyncio.create_task(server.serve(), name="gateway")
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the gateway stopped before it served")
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{gateway.port}/v1/batch"
        async with aiohttp.ClientSession() as http:
            for start in range(0, len(feedback), BATCH):
                items = [
                    f.model_dump(mode="json", exclude_none=True)
                    for f in feedback[start : start + BATCH]
                ]
                async with http.post(url, json={"feedback": items}) as answer:
                    body = await answer.json()
                refused = [item for item in body["feedback"] if item["status"] != 202]
                if answer.status != 207 or refused:
                    raise RuntimeError(f"the gateway refused demo feedback: {refused[:3] or body}")
        print(f"sent {len(feedback)} feedback through the HTTP gateway (POST /v1/batch)")
    finally:
        server.should_exit = True
        await serving


def demo_progress() -> Progress:
    """What the demo is doing while it runs (rich): events sent, then events landed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )


def _landed_count(result: Landed) -> int:
    return result.predictions + sum(result.status.values()) + result.dead_letters


# Where the demo draws its report (`feedbackflow report` over the demo's 30 days).
DEMO_REPORT = Path(".feedbackflow/demo-report.png")


def run_demo(settings: Settings, predictions: int, report: Path = DEMO_REPORT) -> int:
    started = time.monotonic()
    with embedded_stack(settings, "feedbackflow_demo") as live:
        return asyncio.run(_demo(live, predictions, started, report))


async def _demo(live: Settings, predictions: int, started: float, report: Path) -> int:
    registry = registry_from_mapping(DEMO_METRICS)
    live = live.model_copy(
        update={
            "topic_prefix": f"demo-{int(time.time())}",
            "consumer_group": "feedbackflow-demo",
            "http_port": 0,
            # Not the [pipeline] of a feedbackflow.toml in the working directory (5-minute
            # windows): the demo's own.
            "pipeline": PipelineSettings(**DEMO_PIPELINE),
        }
    )
    topics = TopicNames(live.topic_prefix)
    await create_topics(live, topics, partitions=4)
    now = datetime.now(UTC)
    traffic = haiku_traffic(now, predictions)
    # The traffic's 30 days, up to the feedback of the last minute.
    span = Selection(now - timedelta(days=31), now + timedelta(hours=1))
    worker = Worker(live, registry)
    task = asyncio.create_task(worker.run(), name="worker")
    total_feedback = sum(traffic.expected.status.values())
    to_land = len(traffic.predictions) + total_feedback + traffic.expected.dead_letters
    with demo_progress() as progress:
        sending = progress.add_task("sent to Kafka and the gateway", total=to_land)
        async with FeedbackflowProducer(settings=live, topics=topics, registry=registry) as ff:
            for event in traffic.early_feedback:
                await ff.send_raw(topics.feedback, event.target, event.model_dump_json().encode())
            for raw in traffic.malformed:
                await ff.send_raw(topics.feedback, b"malformed", raw)
            await ff.flush()
            progress.advance(sending, len(traffic.early_feedback) + len(traffic.malformed))
            await asyncio.sleep(2.5)  # let a window pass: these wait as pending
            for prediction in traffic.predictions:
                await ff.send_raw(
                    topics.predictions,
                    prediction.effective_join_key,
                    prediction.model_dump_json().encode(),
                )
            await ff.flush()
            progress.advance(sending, len(traffic.predictions))
        await _through_the_gateway(live, registry, traffic.feedback)
        progress.advance(sending, len(traffic.feedback))
        landing = progress.add_task(
            f"landed in Postgres ({describe_duration(live.pipeline.window)} windows)",
            total=to_land,
        )
        conn = await asyncpg.connect(live.database_url)
        try:
            result = await landed(conn)
            deadline = time.monotonic() + 120
            while _matches(traffic.expected, result, len(traffic.predictions)):
                progress.update(landing, completed=_landed_count(result))
                if time.monotonic() > deadline or task.done():
                    break
                await asyncio.sleep(0.5)
                result = await landed(conn)
            progress.update(landing, completed=_landed_count(result))
            # The worker's applier folds the last windows into the read model just after them.
            while await notes_waiting(conn):
                if time.monotonic() > deadline or task.done():
                    break
                await asyncio.sleep(0.2)
            from_read_model = await _read_model_problems(conn, traffic.expected, span)
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
    await write_report(live.database_url, span, report)
    print(f"\nThe read model drawn (`feedbackflow report`): {report}")
    problems = _matches(traffic.expected, result, len(traffic.predictions)) + from_read_model
    if problems:
        print("\nMISMATCH between what was sent and what landed:\n  " + "\n  ".join(problems))
        return 1
    print(
        "\nAll numbers add up: every event sent is in Postgres exactly once, "
        "with the expected status."
    )
    return 0
