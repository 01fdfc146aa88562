"""The worker's labelled counters start at 0 for the labels known in advance: Prometheus' rate()
counts an increment only from a value it saw before, so a series that appears at its first
dead letter would hide that dead letter from the dead-letter burst alert."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ingest.topics import TopicNames
from workers.telemetry import WorkerTelemetry

TOPICS = TopicNames("ff")


def sample(telemetry: WorkerTelemetry, name: str, labels: dict[str, str]) -> float | None:
    return telemetry.registry.get_sample_value(name, labels)


def test_dead_letters_of_each_topic_s_wire_fields_start_at_zero() -> None:
    telemetry = WorkerTelemetry(CollectorRegistry())
    telemetry.start_known_labels(TOPICS)
    dead = "feedbackflow_dead_letters_total"
    for topic, field in (
        (TOPICS.feedback, "value"),
        (TOPICS.feedback, "source"),
        (TOPICS.feedback, "(payload)"),
        (TOPICS.predictions, "timestamp"),
        (TOPICS.predictions, "(event)"),
    ):
        assert sample(telemetry, dead, {"topic": topic, "field": field}) == 0, (topic, field)
    # Each topic its own model's fields: a prediction has no value.
    assert sample(telemetry, dead, {"topic": TOPICS.predictions, "field": "value"}) is None
    for topic in TOPICS.inputs:
        assert sample(telemetry, "feedbackflow_events_consumed_total", {"topic": topic}) == 0
    assert sample(telemetry, "feedbackflow_windows_total", {"outcome": "written"}) == 0
