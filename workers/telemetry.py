"""Prometheus metrics of the worker.  One registry per worker so that tests (and a demo) can run
several in a process; the names are the contract the Grafana dashboards read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from ingest.topics import TopicNames
from ingest.wire.events import Feedback, Prediction


class ConsumerLag:
    """``feedbackflow_consumer_lag``: per input partition, the records between its last
    committed offset and its end.  Set at every commit and at every fetch: a stuck worker
    commits nothing while its partitions' ends move on, so its lag must grow between commits,
    not wait for the next one.  A partition this worker has not committed yet has no value
    (where its group stood is not known here without asking the broker)."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._committed: dict[Any, int] = {}
        self._ends: dict[Any, int] = {}

    def committed(self, offsets: Mapping[Any, int], ends: Mapping[Any, int | None]) -> None:
        self._committed.update(offsets)
        self._observe(ends)

    def fetched(self, ends: Mapping[Any, int | None]) -> None:
        self._observe(ends)

    def _observe(self, ends: Mapping[Any, int | None]) -> None:
        for tp, end in ends.items():
            if end is not None:
                self._ends[tp] = end
            committed = self._committed.get(tp)
            if committed is not None and tp in self._ends:
                lag = max(self._ends[tp] - committed, 0)
                self.gauge.labels(tp.topic, str(tp.partition)).set(lag)


class WorkerTelemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_start_time_seconds and friends: the no-commit alert counts from the start
        # while nothing has been committed yet (deploy/prometheus/rules/).
        ProcessCollector(registry=r)
        self.events_consumed = Counter(
            "feedbackflow_events_consumed",
            "Messages read from the input topics.",
            ["topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "feedbackflow_dead_letters",
            "Messages rejected to the dead-letter table and topic.",
            ["topic", "field"],
            registry=r,
        )
        self.dead_letters_unpublished = Counter(
            "feedbackflow_dead_letters_unpublished",
            "Dead letters the dead-letter topic refused for good (they are in the table).",
            registry=r,
        )
        self.predictions_written = Counter(
            "feedbackflow_predictions_written",
            "New predictions stored (replays excluded).",
            registry=r,
        )
        self.feedback_written = Counter(
            "feedbackflow_feedback_written", "New feedback stored (replays excluded).", registry=r
        )
        self.feedback_resolved = Counter(
            "feedbackflow_feedback_resolved",
            "Feedback that reached a final status, when written or later from the pending queue.",
            ["status", "reason"],
            registry=r,
        )
        self.feedback_queued = Counter(
            "feedbackflow_feedback_queued",
            "Feedback stored pending because its prediction was not written yet.",
            registry=r,
        )
        self.windows = Counter(
            "feedbackflow_windows", "Windows written, by outcome.", ["outcome"], registry=r
        )
        self.window_events = Histogram(
            "feedbackflow_window_events",
            "Events per written window.",
            buckets=(10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000),
            registry=r,
        )
        self.window_write_seconds = Histogram(
            "feedbackflow_window_write_seconds",
            "Time to write one window to Postgres.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        # The read model's applier (workers.postgres.read_model_applier): how long folding
        # the committed windows' notes into the rollups takes, and how many it folded.
        self.read_model_apply_seconds = Histogram(
            "feedbackflow_read_model_apply_seconds",
            "Time to fold the committed windows' notes into the read model.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.read_model_notes_applied = Counter(
            "feedbackflow_read_model_notes_applied",
            "Notes of changed feedback and new predictions folded into the read model.",
            registry=r,
        )
        self.last_commit = Gauge(
            "feedbackflow_last_commit_timestamp_seconds",
            "Unix time of the last Kafka offset commit.",
            registry=r,
        )
        self.window_seconds = Gauge(
            "feedbackflow_window_seconds",
            "The configured window length: alert rules count missed commits in windows.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "feedbackflow_consumer_lag",
            "Messages between the last committed offset and the end of each input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.lag = ConsumerLag(self.consumer_lag)
        self.partitions_dropped = Counter(
            "feedbackflow_partitions_dropped",
            "Day partitions dropped by retention.",
            ["table"],
            registry=r,
        )

    def start_known_labels(self, topics: TopicNames) -> None:
        """A labelled counter that first appears at its first value loses that increment to
        Prometheus' rate() (a worker's first batch is its backlog; a field's first dead letter
        would not count in the dead-letter burst alert): the labels known in advance start at
        0.  Dead letters: each input topic's top-level wire fields, its payload and the whole
        event (a nested field, such as ``source.type``, still appears at its first)."""
        for topic in topics.inputs:
            self.events_consumed.labels(topic)
        self.windows.labels("written")
        for topic, model in ((topics.predictions, Prediction), (topics.feedback, Feedback)):
            for field in ("(payload)", "(event)", *model.model_fields):
                self.dead_letters.labels(topic, field)
