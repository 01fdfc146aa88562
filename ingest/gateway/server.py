"""``feedbackflow api``: the gateway's parts built from the settings, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import uvicorn
from fastapi import FastAPI

from ingest.gateway.admission import Admission
from ingest.gateway.app import gateway_app
from ingest.gateway.auth import Gatekeeper
from ingest.gateway.intake import Intake
from ingest.gateway.parts import GatewayParts
from ingest.gateway.publisher import KafkaPublisher
from ingest.gateway.telemetry import GatewayTelemetry
from ingest.metrics.registry import Metric, MetricRegistry, load_registry
from ingest.topics import TopicNames
from workers.host.gc_tuning import tune_gc_for_requests
from workers.host.startup import ExitCode, StartupFailure
from workers.postgres import idempotent_requests, mlflow_assessments
from workers.postgres.api_keys import StoredKey, find_key
from workers.postgres.idempotent_requests import Remembered
from workers.postgres.metric_definitions import MetricDefinitions
from workers.postgres.mlflow_assessments import StoredAssessment
from workers.read_model.feedback_by_id import stored_feedback
from workers.settings import Settings

log = logging.getLogger("feedbackflow.gateway")
T = TypeVar("T")

# How often remembered idempotent requests past their time are deleted.
FORGET_EVERY_SECONDS = 60.0
# Failures that mean "the database is away", not "the request is wrong".
DATABASE_AWAY = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    TimeoutError,
)


NOT_MIGRATED = "the database has no gateway tables yet: run `feedbackflow migrate`"


@contextlib.contextmanager
def _as_unavailable() -> Iterator[None]:
    """The database being away (or unmigrated) as the ``ConnectionError`` the routes answer
    503 for; any other error is a bug and stays one."""
    try:
        yield
    except asyncpg.UndefinedTableError:
        raise ConnectionError(NOT_MIGRATED) from None
    except DATABASE_AWAY as exc:
        raise ConnectionError(str(exc) or type(exc).__name__) from None


class GatewayDatabase:
    """The gateway's small pool: API key look-ups, idempotent requests, metric definitions and
    MLflow's assessment directory; nothing per event."""

    def __init__(
        self,
        url: str,
        remember_for: timedelta,
        metrics: MetricDefinitions,
        refresh_seconds: float,
    ) -> None:
        self.url, self.remember_for = url, remember_for
        self.metrics, self.refresh_seconds = metrics, refresh_seconds
        self._pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._pool = pool = await asyncpg.create_pool(self.url, min_size=0, max_size=4, timeout=5)
        with contextlib.suppress(*DATABASE_AWAY, asyncpg.PostgresError):
            await self.metrics.refresh(pool)  # else the refreshing task keeps trying
        self._tasks = [
            asyncio.create_task(self._forget(), name="forget-idempotent-requests"),
            asyncio.create_task(
                self.metrics.keep_fresh(pool, self.refresh_seconds), name="refresh-metrics"
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pool is not None:
            await self._pool.close()

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ConnectionError("the database pool is not started")
        return self._pool

    async def find_key(self, key_id: str) -> StoredKey | None:
        with _as_unavailable():
            return await find_key(self._ready(), key_id)

    async def claim(self, caller: str, key: str, first: Remembered) -> Remembered:
        with _as_unavailable():
            return await idempotent_requests.claim(self._ready(), caller, key, first)

    async def read_feedback(self, feedback_id: str) -> dict[str, Any] | None:
        """A stored feedback by id; a UUIDv7 id bounds the day partitions searched."""
        try:
            wanted = UUID(feedback_id)
        except ValueError:
            return None
        with _as_unavailable():
            return await stored_feedback(self._ready(), wanted)

    async def run(self, call: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        with _as_unavailable():
            return await call(self._ready())

    async def define_metric(
        self, name: str, table: Mapping[str, Any], *, origin: str, created_by: str
    ) -> Metric:
        with _as_unavailable():
            return await self.metrics.define(
                self._ready(), name, table, origin=origin, created_by=created_by
            )

    async def find_assessment(self, assessment_id: UUID) -> StoredAssessment | None:
        with _as_unavailable():
            return await mlflow_assessments.find(self._ready(), assessment_id)

    async def remember_assessment(
        self, trace_id: str, assessment: dict[str, Any], feedback_id: UUID
    ) -> None:
        with _as_unavailable():
            await mlflow_assessments.remember(self._ready(), trace_id, assessment, feedback_id)

    async def revise_assessment(
        self, assessment: dict[str, Any], feedback_id: UUID, *, deleted: bool = False
    ) -> None:
        with _as_unavailable():
            await mlflow_assessments.revise(self._ready(), assessment, feedback_id, deleted=deleted)

    async def _forget(self) -> None:
        while True:
            try:
                await idempotent_requests.forget_older_than(self._ready(), self.remember_for)
            except asyncpg.UndefinedTableError:
                log.warning(NOT_MIGRATED)
            except (*DATABASE_AWAY, asyncpg.PostgresError) as exc:
                log.warning("could not forget old idempotent requests: %s", exc)
            await asyncio.sleep(FORGET_EVERY_SECONDS)


def build_parts(settings: Settings, registry: MetricRegistry) -> GatewayParts:
    gateway = settings.gateway
    metrics = MetricDefinitions(registry)
    database = GatewayDatabase(
        settings.database_url,
        timedelta(seconds=gateway.idempotency_seconds),
        metrics,
        settings.metric_refresh_seconds,
    )
    publisher = KafkaPublisher(
        settings,
        timeout=gateway.publish_timeout_seconds,
        linger_ms=gateway.linger_ms,
    )
    telemetry = GatewayTelemetry()
    secret = gateway.token_secret.get_secret_value() if gateway.token_secret else None

    async def start() -> None:
        if not gateway.auth:
            log.warning(
                "AUTH IS OFF (FEEDBACKFLOW_GATEWAY__AUTH=false): anyone who reaches "
                "%s:%d may write predictions and feedback",
                gateway.host,
                gateway.port,
            )
        await database.start()
        await publisher.start()
        tune_gc_for_requests()

    async def stop() -> None:
        await publisher.stop()
        await database.stop()

    parts = GatewayParts(
        settings=gateway,
        registry=registry,
        admission=Admission(
            registry,
            TopicNames(settings.topic_prefix),
            settings.pipeline.retention,
            gateway.max_event_bytes,
            settings.pipeline.selectable_tags,
        ),
        gatekeeper=Gatekeeper(
            enabled=gateway.auth,
            lookup=database.find_key,
            token_secret=secret,
            cache_seconds=gateway.key_cache_seconds,
        ),
        publisher=publisher,
        intake=Intake(publisher, database.claim, telemetry),
        telemetry=telemetry,
        on_start=start,
        on_stop=stop,
        read_feedback=database.read_feedback,
        store=database,
    )
    metrics.on_change = parts.use
    return parts


def uvicorn_config(
    settings: Settings, registry: MetricRegistry, app: FastAPI | None = None
) -> uvicorn.Config:
    """How uvicorn serves the gateway (``app``: one built already, for the benchmark's)."""
    return uvicorn.Config(
        app or gateway_app(build_parts(settings, registry)),
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through ours (workers.host.logs), one format
        access_log=False,
        # Between a client's requests on one connection; past it the connection is closed.
        timeout_keep_alive=30,
        lifespan="on",
    )


def app_from_environment() -> FastAPI:
    """uvicorn's factory for ``feedbackflow api --processes N``: each process builds its own
    gateway from the environment and config file, as the command that started them did."""
    settings = Settings.load()
    return gateway_app(build_parts(settings, load_registry(settings.config)))


def run_gateway(settings: Settings, registry: MetricRegistry, processes: int = 1) -> None:
    """Serve in this process, or in ``processes`` processes sharing the port (uvicorn's
    supervisor restarts one that dies).  The gateway keeps no state but its key cache, so
    processes scale it across cores; for several, the command's flags must be in the
    environment (``workers.cli`` puts them there) for each process to read."""
    gateway = settings.gateway
    log.info("gateway on http://%s:%d (docs at /docs)", gateway.host, gateway.port)
    if processes == 1:
        server = uvicorn.Server(uvicorn_config(settings, registry))
        try:
            server.run()
        except SystemExit:
            if server.started:
                raise
            # uvicorn logged why (through our logging); its own exit code would read as ours.
            raise StartupFailure(
                ExitCode.PORT_UNAVAILABLE,
                f"the gateway cannot listen on {gateway.host}:{gateway.port}: is the port taken? "
                "Choose another with --port or FEEDBACKFLOW_GATEWAY__PORT",
            ) from None
        return
    uvicorn.run(
        "ingest.gateway.server:app_from_environment",
        factory=True,
        workers=processes,
        host=gateway.host,
        port=gateway.port,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through ours (workers.host.logs), one format
        access_log=False,
        timeout_keep_alive=30,
    )
