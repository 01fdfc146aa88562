"""Every example in the README works as written: the config, the wire-format events and the SDK
snippet (run against the suite's broker, named in the environment as `feedbackflow dev` does)."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from ingest.metrics.registry import registry_from_mapping
from ingest.topics import TopicNames, create_topics
from ingest.wire.events import Feedback, Prediction
from workers.devstack.servers import TansuBroker
from workers.settings import PipelineSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_config_is_a_valid_config() -> None:
    (block,) = _blocks("toml")
    document = tomllib.loads(block)
    registry = registry_from_mapping(document)
    assert "haiku_rating" in registry.metrics
    assert PipelineSettings(**document["pipeline"]).windows_in_flight == 2


def test_the_readme_events_are_valid_wire_format() -> None:
    prediction, feedback = (json.loads(block) for block in _blocks("json"))
    assert Prediction.model_validate(prediction).application == "generate_haiku"
    assert Feedback.model_validate(feedback).metric == "haiku_rating"


async def test_the_readme_sdk_snippet_sends_what_it_says(
    kafka: TansuBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = _blocks("python")
    # What `feedbackflow dev` prints for its embedded broker.
    monkeypatch.setenv("FEEDBACKFLOW_KAFKA_BOOTSTRAP", kafka.bootstrap)
    monkeypatch.setenv("FEEDBACKFLOW_KAFKA_IDEMPOTENCE", "false")
    await create_topics(kafka.bootstrap, TopicNames())
    # The snippet's top-level ``async with`` runs inside a coroutine, as in an async service.
    source = "async def snippet():\n" + "".join(f"    {line}\n" for line in code.splitlines())
    scope: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    await scope["snippet"]()  # type: ignore[operator]

    consumer = AIOKafkaConsumer(
        *TopicNames().inputs, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        seen: dict[str, list[bytes]] = {}
        async with asyncio.timeout(30):
            while sum(map(len, seen.values())) < 2:
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    seen.setdefault(tp.topic, []).extend(r.value for r in records)
    finally:
        await consumer.stop()
    prediction = Prediction.model_validate_json(seen[TopicNames().predictions][-1])
    feedback = Feedback.model_validate_json(seen[TopicNames().feedback][-1])
    assert feedback.prediction_id == prediction.prediction_id
    assert (prediction.model, feedback.value) == ("gpt-haiku-a", True)
