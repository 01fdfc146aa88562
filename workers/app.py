"""Runs a worker as a process: the consume loop, retention and the HTTP endpoints in one event
loop, stopped cleanly by SIGTERM/SIGINT (buffered events are written and committed first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from ingest.metric_config import MetricRegistry
from ingest.settings import Settings
from workers.clock import Clock, SystemClock
from workers.http import worker_api
from workers.worker import Worker

log = logging.getLogger("feedbackflow.worker")


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the worker decides how to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_worker(
    settings: Settings, registry: MetricRegistry, clock: Clock | None = None
) -> None:
    worker = Worker(settings, registry, clock=clock or SystemClock())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    server = _QuietServer(
        uvicorn.Config(
            worker_api(worker),
            host="0.0.0.0",  # noqa: S104 - scraped by Prometheus from outside
            port=settings.http_port,
            log_level="warning",
            lifespan="off",
        )
    )
    web = asyncio.create_task(server.serve(), name="http")
    log.info(
        "worker consuming %s from %s; /metrics and /health on port %d",
        ", ".join(worker.topics.inputs),
        settings.kafka_bootstrap,
        settings.http_port,
    )
    try:
        await worker.run()
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await web
