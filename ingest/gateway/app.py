"""The gateway as an ASGI app: routes, error answers, CORS, request metrics, lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.gateway import openapi
from ingest.gateway.errors import Refusal
from ingest.gateway.log10 import add_log10_routes
from ingest.gateway.mlflow import add_mlflow_routes
from ingest.gateway.native import add_native_routes
from ingest.gateway.parts import GatewayParts
from ingest.gateway.telemetry import GatewayTelemetry
from ingest.gateway.tensorzero import TensorZeroFeedback, add_tensorzero_routes

DESCRIPTION = """\
feedbackflow's HTTP front door: predictions and feedback in wire format v1, TensorZero's
`/feedback` unchanged. Every event is checked as the worker checks it and answered only once
the broker acknowledged it. Errors: `{"error": "<field>: <reason>", "field": "<field>"}`.
"""


NO_OPENTELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": f"{request.url.path}: {exc.detail}", "field": "(path)"},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _bad_parameter(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = exc.errors()[0]
    field = str(first["loc"][-1]) if first.get("loc") else "(request)"
    return JSONResponse({"error": f"{field}: {first['msg']}", "field": field}, status_code=400)


class RequestMetrics:
    """Counts answers by route and status and times them; plain ASGI, so it costs a few
    microseconds a request (Starlette's BaseHTTPMiddleware costs far more)."""

    def __init__(self, app: ASGIApp, telemetry: GatewayTelemetry) -> None:
        self.app, self.telemetry = app, telemetry
        # Labelled children, looked up once per route and status: ``labels()`` costs more
        # than the increment.
        self._counters: dict[tuple[str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The route matched (a bounded set of labels), not the path asked for.
            route = getattr(scope.get("route"), "path", "other")
            counter = self._counters.get((route, status[0]))
            if counter is None:
                counter = self.telemetry.requests.labels(route, str(status[0]))
                self._counters[(route, status[0])] = counter
            timer = self._timers.get(route)
            if timer is None:
                timer = self._timers[route] = self.telemetry.request_seconds.labels(route)
            counter.inc()
            timer.observe(time.perf_counter() - started)


def gateway_app(parts: GatewayParts) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if parts.on_start is not None:
            await parts.on_start()
        try:
            yield
        finally:
            if parts.on_stop is not None:
                await parts.on_stop()

    app = FastAPI(
        title="feedbackflow gateway",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # The gateway's own Prometheus metrics are its telemetry; FastAPI's OpenTelemetry hooks
        # asked for the tracing context several times a request (docs/performance.md).
        telemetry=NO_OPENTELEMETRY,
    )
    app.add_exception_handler(Refusal, _refused)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _bad_parameter)
    add_native_routes(app, parts)
    add_tensorzero_routes(app, parts)
    add_mlflow_routes(app, parts)
    add_log10_routes(app, parts)

    @app.get("/health", tags=["operations"], summary="200 when a broker answers, else 503")
    async def health() -> JSONResponse:
        if await parts.publisher.reachable():
            return JSONResponse({"status": "ok", "broker": "reachable"})
        return JSONResponse(
            {"status": "unavailable", "broker": "unreachable"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(parts.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    openapi.install(app, {openapi.TENSORZERO_FEEDBACK: TensorZeroFeedback})
    app.add_middleware(RequestMetrics, telemetry=parts.telemetry)
    if parts.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(parts.settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            max_age=600,
        )
    return app
