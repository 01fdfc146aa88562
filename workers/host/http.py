"""The worker's HTTP face: ``/metrics`` for Prometheus, ``/health`` and ``/ready`` for
orchestrators.

``/health`` is 503 while the worker cannot do its work: starting, the loop stopped, writes or
commits failing, or nothing committed for several windows although records wait (workers.health).
``/ready`` adds that the worker holds partitions: one that holds none is alive and serves
nothing (a consumer group with more workers than partitions).  Both answer with the reason, the
last commit's age, the lag and the partitions held."""

from __future__ import annotations

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workers.host.worker import Worker


def worker_api(worker: Worker) -> FastAPI:
    api = FastAPI(title="feedbackflow worker", docs_url=None, redoc_url=None)

    # Both are async: rendering is short, and a plain ``def`` endpoint runs on a thread pool,
    # whose hand-offs took the GIL from the event loop for longer than the rendering itself
    # (measured with py-spy under frequent scrapes; docs/performance.md).
    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(worker.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/health")
    async def health() -> JSONResponse:
        ok, _, body = worker.verdict()
        return JSONResponse(body, status_code=200 if ok else 503)

    @api.get("/ready")
    async def ready() -> JSONResponse:
        ok, _, body = worker.verdict(needs_partitions=True)
        return JSONResponse(body, status_code=200 if ok else 503)

    return api
