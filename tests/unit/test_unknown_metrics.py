"""A feedback for a metric defined at run time after the worker last read the definitions is
decoded again before its window is written, not lost as a dead letter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from ingest.metrics.registry import MetricRegistry, registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.stream.decode import Decoder
from workers.stream.unknown_metrics import RecheckUnknownMetrics
from workers.stream.window import WindowContents
from workers.testing.traffic import Record

TOPICS = TopicNames("t")
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
CONFIGURED = registry_from_mapping({"metrics": {"thumbs": {"type": "boolean"}}})
DEFINED_LATER = registry_from_mapping(
    {"metrics": {"thumbs": {"type": "boolean"}, "groundedness": {"type": "json"}}}
)


def feedback(metric: str, offset: int) -> Record:
    event = {
        "feedback_id": str(uuid7(int(NOW.timestamp() * 1000) - offset)),
        "metric": metric,
        "join_key": "trace-1",
        "value": {"ok": True},
    }
    stamp = int(NOW.timestamp() * 1000)
    return Record(TOPICS.feedback, 0, offset, stamp, b"trace-1", json.dumps(event).encode())


def window_of(decoder: Decoder, *records: Record) -> WindowContents:
    batch = decoder.decode(records, NOW)
    return WindowContents(batch.predictions, batch.feedback, batch.dead_letters, {}, len(records))


async def test_feedback_for_a_metric_defined_meanwhile_is_decoded_again() -> None:
    decoder = Decoder(CONFIGURED, TOPICS, timedelta(days=90))
    refreshed: list[MetricRegistry] = []

    async def refresh() -> None:
        refreshed.append(DEFINED_LATER)
        decoder.use(DEFINED_LATER)

    contents = window_of(decoder, feedback("groundedness", 1), feedback("made_up", 2))
    assert len(contents.dead_letters) == 2
    rechecked = await RecheckUnknownMetrics(decoder, refresh)(contents)
    assert [row.metric for row in rechecked.feedback] == ["groundedness"]
    assert [dead.reason.split(" (")[0] for dead in rechecked.dead_letters] == [
        "unknown metric 'made_up'"
    ]
    assert rechecked.dead_letters[0].kafka_offset == 2
    assert len(refreshed) == 1


async def test_a_window_without_unknown_metrics_reads_no_definitions() -> None:
    decoder = Decoder(CONFIGURED, TOPICS, timedelta(days=90))

    async def refresh() -> None:
        raise AssertionError("no refresh expected")

    contents = window_of(decoder, feedback("thumbs", 1))
    assert await RecheckUnknownMetrics(decoder, refresh)(contents) is contents
