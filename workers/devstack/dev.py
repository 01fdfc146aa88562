"""``feedbackflow dev``: the embedded stack and one worker, for a developer's own producers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import uvicorn

from ingest.gateway.server import uvicorn_config
from ingest.metrics.registry import MetricRegistry, load_registry, registry_from_mapping
from ingest.topics import TopicNames
from workers.devstack.haiku_traffic import DEMO_METRICS, DEMO_PIPELINE
from workers.devstack.stack import embedded_stack, given
from workers.host.app import run_worker_process
from workers.host.startup import migrated
from workers.settings import PipelineSettings, Settings, describe_duration


def _start_gateway(live: Settings, registry: MetricRegistry) -> uvicorn.Server:
    """The HTTP gateway beside the worker, in a thread of its own with auth off: a laptop's
    stack (the gateway says so loudly at start)."""
    gateway = live.gateway.model_copy(update={"auth": False})
    server = uvicorn.Server(uvicorn_config(live.model_copy(update={"gateway": gateway}), registry))
    threading.Thread(target=server.run, name="gateway", daemon=True).start()
    return server


def dev_banner(live: Settings, http_port: int) -> str:
    """How to connect, and the window length: events land in Postgres only when their window
    closes, and with the repository's 5-minute windows the stack seemed to do nothing."""
    window = describe_duration(live.pipeline.window)
    return (
        "feedbackflow dev is running. Connect with:\n"
        f"  FEEDBACKFLOW_KAFKA_BOOTSTRAP={live.kafka_bootstrap}\n"
        f"  FEEDBACKFLOW_DATABASE_URL='{live.database_url}'\n"
        f"  FEEDBACKFLOW_KAFKA_IDEMPOTENCE={str(live.kafka_idempotence).lower()}\n"
        f"  FEEDBACKFLOW_TOPIC_PREFIX={live.topic_prefix}\n"
        f"  worker metrics: http://127.0.0.1:{http_port}/metrics  health: /health\n"
        f"  HTTP gateway (auth off): http://127.0.0.1:{live.gateway.port}  docs: /docs\n"
        f"  topics: {', '.join(TopicNames(live.topic_prefix).inputs)}\n"
        f"Windows of {window}: what you send lands in Postgres when its window closes, up to "
        f"{window} later (shorter: FEEDBACKFLOW_PIPELINE__WINDOW=10s).\n"
        "Ctrl-C stops it."
    )


def run_dev(settings: Settings, http_port: int) -> int:
    registry = registry_from_mapping(DEMO_METRICS)
    if given("config", settings) or settings.config.is_file():
        registry = load_registry(settings.config)  # and its [pipeline], read by the settings
    elif "pipeline" not in settings.model_fields_set:
        settings = settings.model_copy(update={"pipeline": PipelineSettings(**DEMO_PIPELINE)})
    pgdata = Path.cwd() / ".feedbackflow" / "pgdata"
    with embedded_stack(settings, None, pgdata) as live:
        live = live.model_copy(update={"http_port": http_port})
        asyncio.run(migrated(live))  # a database that is not there: one line, its exit code
        print(dev_banner(live, http_port), flush=True)
        gateway = _start_gateway(live, registry)
        try:
            run_worker_process(live, registry)
        finally:
            gateway.should_exit = True
    return 0
