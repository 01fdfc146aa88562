"""Prometheus metrics of the gateway; the names are the contract dashboards read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ingest.gateway.errors import Refusal
from workers.postgres.idempotent_requests import PublishedEvent


class GatewayTelemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "feedbackflow_gateway_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "feedbackflow_gateway_request_seconds",
            "Time from a request's arrival to its answer, by route.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.events = Counter(
            "feedbackflow_gateway_events",
            "Events by kind (predictions, feedback) and outcome: published (acked by the "
            "broker), refused (invalid, not sent), unavailable (the broker did not take "
            "them), dryrun.",
            ["kind", "outcome"],
            registry=r,
        )

        self._children: dict[tuple[str, str], Any] = {}

    def _event_counter(self, topic: str, outcome: str) -> Any:
        """The labelled child, looked up once: ``labels()`` costs more than the increment."""
        child = self._children.get((topic, outcome))
        if child is None:
            child = self._children[(topic, outcome)] = self.events.labels(_kind(topic), outcome)
        return child

    def count_events(self, events: Sequence[PublishedEvent], outcome: str) -> None:
        for event in events:
            self._event_counter(event.topic, outcome).inc()

    def count_published(
        self, events: Sequence[PublishedEvent], published: Sequence[Refusal | None]
    ) -> None:
        for event, refusal in zip(events, published, strict=True):
            outcome = "published" if refusal is None else "unavailable"
            self._event_counter(event.topic, outcome).inc()

    def count_refused(self, kind: str) -> None:
        self.events.labels(kind, "refused").inc()


def _kind(topic: str) -> str:
    return "predictions" if topic.endswith(".predictions") else "feedback"
