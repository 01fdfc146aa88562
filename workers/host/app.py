"""The worker process: a faust-streaming app that hosts the windowed join.

faust does what it is good at here -- the process and its lifecycle (signals, services, clean
shutdown), the retention timer, and the web server (our FastAPI ``/metrics`` and ``/health`` via
``faust.contrib.asgi.serve_asgi``).  The hot path is *not* a faust agent: faust acknowledges events
by itself (when a stream advances, when an agent raises, in ``take()``'s ``finally:``) and hands
each message to an agent through several tasks and queue hops, an order of magnitude slower than
``getmany`` plus pydantic on the same messages (docs/performance.md).  So the app runs
``producer_only`` (no faust consumer group), and a ``WindowedJoinService`` runs our own consumer
loop (``workers.stream``), which commits offsets only after Postgres has committed the window
(docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import faust
from faust.contrib.asgi import serve_asgi
from mode import Service

from ingest.metrics.registry import MetricRegistry
from workers.clock import Clock, SystemClock
from workers.host.gc_tuning import tune_gc_for_windows
from workers.host.http import worker_api
from workers.host.logs import logging_config
from workers.host.worker import Worker
from workers.settings import Settings, describe_duration

log = logging.getLogger("feedbackflow.worker")


def _broker_urls(bootstrap: str) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap.split(",") if server)


def build_app(worker: Worker) -> faust.App:
    settings = worker.settings
    app_id = f"feedbackflow-{settings.consumer_group}"
    datadir = (
        Path(tempfile.gettempdir()) / "feedbackflow-faust"
    )  # faust wants one; we keep no state
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=_broker_urls(settings.kafka_bootstrap),
        store="memory://",
        autodiscover=False,
        datadir=str(datadir / app_id),
        web_port=settings.http_port,
        web_bind="0.0.0.0",  # noqa: S104 - scraped by Prometheus from outside
    )
    # No faust consumer group (an attribute, not a setting): WindowedJoinService consumes.
    app.producer_only = True
    # Nor faust's producer: nothing sends through it, and every Kafka connection of the worker
    # is then one of ours, built from the settings' TLS and SASL (ingest.kafka_client).
    app.boot_strategy.enable_kafka_producer = False
    serve_asgi(app, worker_api(worker), log_level="warning")

    class WindowedJoinService(Service):
        """Runs the consume → window → Postgres → commit loop; on stop, flushes and commits."""

        _task: asyncio.Task[None] | None = None
        _crashing: asyncio.Future[None] | None = None

        async def on_start(self) -> None:
            self._task = asyncio.create_task(worker.run(), name="windowed-join")
            self._task.add_done_callback(self._on_done)

        def _on_done(self, task: asyncio.Task[None]) -> None:
            exc = None if task.cancelled() else task.exception()
            if exc is None and not worker.stopping.is_set():
                exc = RuntimeError("windowed join stopped without being asked to")
            if exc is not None:
                log.error("windowed join failed: %r", exc)
                self._crashing = asyncio.ensure_future(self.crash(exc))  # exits non-zero

        async def on_stop(self) -> None:
            worker.stopping.set()
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task

    app.service(WindowedJoinService)

    app.timer(interval=settings.pipeline.retention_every_seconds, on_leader=False)(
        worker.apply_retention
    )
    return app


def run_worker_process(
    settings: Settings, registry: MetricRegistry, clock: Clock | None = None, **worker_options: Any
) -> None:
    """Block running the faust worker until SIGTERM/SIGINT; exits non-zero if the join fails."""
    asyncio.set_event_loop(asyncio.new_event_loop())  # faust's worker runs the loop it finds
    worker = Worker(settings, registry, clock=clock or SystemClock())
    app = build_app(worker)
    tune_gc_for_windows(settings.pipeline.max_window_events)
    log.info(
        "worker consuming %s from %s in windows of %s (events land in Postgres when their "
        "window closes); /metrics and /health on port %d",
        ", ".join(worker.topics.inputs),
        settings.kafka_bootstrap,
        describe_duration(settings.pipeline.window),
        settings.http_port,
    )
    faust.Worker(
        app,
        loglevel=settings.log_level,
        # faust would install its own format; ours, so that the two do not interleave.
        logging_config=logging_config(settings.log_format, settings.log_level),
        quiet=True,  # no banner on stdout: the line above says what runs
        **worker_options,
    ).execute_from_commandline()
