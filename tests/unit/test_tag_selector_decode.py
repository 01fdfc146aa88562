"""Decoding a tag selector: parsed items, the indexed tag to probe, and refusals that name the
field and say why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.metrics.registry import registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from ingest.wire.events import Feedback
from workers.stream.decode import DecodedBatch, Decoder
from workers.testing.traffic import Record

TOPICS = TopicNames("t")
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
REGISTRY = registry_from_mapping(
    {"metrics": {"helpful": {"type": "boolean"}, "solved": {"type": "boolean", "level": "episode"}}}
)


def decode(items: Any, selectable: tuple[str, ...] = ("session",), **extra: Any) -> DecodedBatch:
    event = {
        "feedback_id": str(uuid7(int(NOW.timestamp() * 1000))),
        "metric": "helpful",
        "tag_selector": items,
        "value": True,
        **extra,
    }
    stamp = int(NOW.timestamp() * 1000)
    record = Record(TOPICS.feedback, 0, 0, stamp, b"k", json.dumps(event).encode())
    return Decoder(REGISTRY, TOPICS, timedelta(days=90), selectable).decode([record], NOW)


def test_a_selector_decodes_into_its_items_and_probes_an_indexed_pair_first() -> None:
    batch = decode(["user", "session=s1", "env=prod", "session=s1"])
    assert (batch.feedback, batch.dead_letters) == ([], [])
    [row] = batch.selectors
    assert row.selector == ["env=prod", "session=s1", "user"]
    assert row.probe_tag == "session=s1"
    assert json.loads(row.pairs) == {"env": "prod", "session": "s1"}
    assert row.keys == ["user"]
    assert row.value_bool is True


def test_a_bare_selectable_key_is_probed_when_no_pair_is_indexed() -> None:
    [row] = decode(["session", "env=prod"]).selectors
    assert row.probe_tag == "session"


@pytest.mark.parametrize(
    ("items", "selectable", "field", "reason"),
    [
        (["env=prod"], ("session",), "tag_selector", "needs an item on a selectable tag key"),
        (["session=a"], (), "tag_selector", "pipeline.selectable_tags: none"),
        (["session=a", "session=b"], ("session",), "tag_selector", "cannot equal two values"),
        (["=a"], ("session",), "(event)", "the key is not empty"),
        ([], ("session",), "tag_selector", "at least 1 item"),
    ],
)
def test_a_bad_selector_is_a_dead_letter_naming_why(
    items: list[str], selectable: tuple[str, ...], field: str, reason: str
) -> None:
    [dead] = decode(items, selectable).dead_letters
    assert dead.error_field == field
    assert reason in dead.reason


def test_an_episode_metric_takes_no_selector() -> None:
    [dead] = decode(["session=a"], metric="solved").dead_letters
    assert dead.error_field == "tag_selector"
    assert "episode-level" in dead.reason


def test_a_selector_is_keyed_by_its_sorted_items() -> None:
    event = Feedback.model_validate(
        {"feedback_id": str(uuid7(0)), "metric": "m", "tag_selector": ["b", "a=1"], "value": 1}
    )
    assert (event.target_kind, event.target) == ("tag_selector", "tags:a=1,b")
