"""The worker's HTTP face: ``/metrics`` for Prometheus and ``/health`` for orchestrators."""

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
        ok, detail = worker.healthy()
        return JSONResponse(
            {"status": "ok" if ok else "unhealthy", "detail": detail},
            status_code=200 if ok else 503,
        )

    return api
