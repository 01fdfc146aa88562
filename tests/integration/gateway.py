"""Runs the HTTP gateway against a test's broker and database, over a real socket."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import mlflow
import pytest
import uvicorn
from pydantic import SecretStr

from ingest.gateway.server import uvicorn_config
from ingest.metrics.registry import MetricRegistry
from tests.integration.harness import LivePipeline, live_pipeline, wait_until
from workers.devstack.servers import free_port
from workers.postgres.api_keys import create_key
from workers.settings import Settings

TOKEN_SECRET = "a-test-secret-of-at-least-32-bytes-long"
# The gateway's own thread may take a while to import and bind on a loaded machine.
START_WITHIN_SECONDS = 30.0


def with_gateway(settings: Settings, **gateway: Any) -> Settings:
    """``settings`` with the gateway on a free port, auth on and tokens enabled, unless said."""
    values: dict[str, Any] = {"port": free_port(), "token_secret": SecretStr(TOKEN_SECRET)}
    values.update(gateway)
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=values)})


@asynccontextmanager
async def running_gateway(settings: Settings, registry: MetricRegistry) -> AsyncIterator[str]:
    """The gateway serving in a thread of its own (its own event loop, as in production, and
    free to answer while a test blocks in a synchronous client); yields its base URL."""
    server = uvicorn.Server(uvicorn_config(settings, registry))
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    try:
        await wait_until(
            lambda: _true(server.started or not thread.is_alive()),
            within=START_WITHIN_SECONDS,
            what="the gateway to start",
        )
        assert server.started, "the gateway's thread ended before it served"
        yield f"http://127.0.0.1:{settings.gateway.port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, START_WITHIN_SECONDS)


async def _true(value: bool) -> bool:
    return value


async def new_key(database_url: str, *scopes: str, name: str = "test-service") -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await create_key(conn, name, list(scopes))
    finally:
        await conn.close()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@dataclass(frozen=True)
class MlflowAtGateway:
    live: LivePipeline
    http: httpx.AsyncClient
    prediction_id: str


@asynccontextmanager
async def mlflow_at_gateway(
    bootstrap: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    trace_id: str,
    registry: MetricRegistry | None = None,
    **gateway: Any,
) -> AsyncIterator[MlflowAtGateway]:
    """A live pipeline and gateway, MLflow's client pointed at it with a key, and a prediction
    logged with ``trace_id`` as its join key (a trace is a prediction addressed by its id)."""
    async with live_pipeline(bootstrap, database_url, registry=registry) as live:
        key = await new_key(database_url, "predictions", "feedback")
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
        async with (
            running_gateway(with_gateway(live.settings, **gateway), live.registry) as url,
            httpx.AsyncClient(base_url=url, headers=bearer(key)) as http,
        ):
            answer = await http.post(
                "/v1/predictions", json={"application": "rag", "join_key": trace_id}
            )
            assert answer.status_code == 202, answer.text
            mlflow.set_tracking_uri(url)
            yield MlflowAtGateway(live, http, answer.json()["prediction_id"])
