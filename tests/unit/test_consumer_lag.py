"""feedbackflow_consumer_lag counts from the last committed offset to the partition's end as of
the last fetch: a worker that stops committing shows its lag growing."""

from __future__ import annotations

from collections import namedtuple

from prometheus_client import CollectorRegistry

from workers.telemetry import WorkerTelemetry

TopicPartition = namedtuple("TopicPartition", "topic partition")
P0 = TopicPartition("feedback", 0)
P1 = TopicPartition("feedback", 1)


def lag(telemetry: WorkerTelemetry, tp: TopicPartition) -> float | None:
    return telemetry.registry.get_sample_value(
        "feedbackflow_consumer_lag", {"topic": tp.topic, "partition": str(tp.partition)}
    )


def test_the_lag_grows_between_commits_as_the_ends_move() -> None:
    telemetry = WorkerTelemetry(CollectorRegistry())
    telemetry.lag.fetched({P0: 50, P1: 7})
    assert lag(telemetry, P0) is None  # nothing committed here yet: not known
    telemetry.lag.committed({P0: 40}, {P0: 50})
    assert lag(telemetry, P0) == 10
    telemetry.lag.fetched({P0: 90, P1: 9})  # stuck: no commit, the end moves on
    assert lag(telemetry, P0) == 50
    assert lag(telemetry, P1) is None
    telemetry.lag.fetched({P0: None})  # an end not known at this fetch keeps the last
    assert lag(telemetry, P0) == 50
    telemetry.lag.committed({P0: 90, P1: 9}, {P0: 90, P1: 9})
    assert (lag(telemetry, P0), lag(telemetry, P1)) == (0, 0)
