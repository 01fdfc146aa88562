"""What the routes share: built once per gateway (``ingest.gateway.server``), passed to each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest.gateway.admission import Admission
from ingest.gateway.auth import Gatekeeper
from ingest.gateway.intake import Intake
from ingest.gateway.publisher import KafkaPublisher
from ingest.gateway.telemetry import GatewayTelemetry
from ingest.metrics.registry import MetricRegistry
from workers.settings import GatewaySettings


def utc_now() -> datetime:
    return datetime.now(UTC)


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
