"""What the routes share: built once per gateway (``ingest.gateway.server``), passed to each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from ingest.gateway.admission import Admission
from ingest.gateway.auth import Gatekeeper
from ingest.gateway.intake import Intake
from ingest.gateway.publisher import KafkaPublisher
from ingest.gateway.telemetry import GatewayTelemetry
from ingest.metrics.registry import Metric, MetricRegistry
from workers.postgres.metric_definitions import MetricDefinitions
from workers.postgres.mlflow_assessments import StoredAssessment
from workers.settings import GatewaySettings

T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


class GatewayStore(Protocol):
    """What routes keep in Postgres besides keys and idempotent requests.  Each method raises
    ``ConnectionError`` when the database is away (the routes answer 503)."""

    metrics: MetricDefinitions

    async def run(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call`` with the gateway's pool (a ``workers.postgres`` function)."""
        ...

    async def define_metric(
        self, name: str, table: Mapping[str, Any], *, origin: str, created_by: str
    ) -> Metric: ...

    async def find_assessment(self, assessment_id: UUID) -> StoredAssessment | None: ...

    async def remember_assessment(
        self, trace_id: str, assessment: dict[str, Any], feedback_id: UUID
    ) -> None: ...

    async def revise_assessment(
        self, assessment: dict[str, Any], feedback_id: UUID, *, deleted: bool = False
    ) -> None: ...


@dataclass
class GatewayParts:
    settings: GatewaySettings
    registry: MetricRegistry
    admission: Admission
    gatekeeper: Gatekeeper
    publisher: KafkaPublisher
    intake: Intake
    telemetry: GatewayTelemetry
    now: Callable[[], datetime] = utc_now
    # Started and stopped with the app (the database pool, the idempotency trimmer).
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    # A stored feedback by its id, for the routes that read back (MLflow's get assessment).
    read_feedback: Callable[[str], Awaitable[Mapping[str, Any] | None]] | None = None
    store: GatewayStore | None = None

    def use(self, registry: MetricRegistry) -> None:
        """A new registry (metrics defined at run time) for the routes and admission."""
        self.registry = registry
        self.admission.use(registry)
