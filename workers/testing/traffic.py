"""One realistic event set, generated once and replayed by every measurement.

70% predictions (UUIDv7 ids, small inputs/outputs), 30% feedback (``haiku_rating`` boolean or
``haiku_stars`` float), and 20% of that feedback produced *before* its prediction, which is the
case that costs the worker a pending row and a later join.  Messages are encoded once, as bytes,
so that producing them is not what is measured.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from ingest.metrics.registry import MetricRegistry, registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames, create_topics
from ingest.wire.events import Feedback, Prediction
from workers.stream.decode import DecodedBatch, Decoder, PlainRecord

FEEDBACK_SHARE = 0.30
EARLY_SHARE = 0.20
PARTITIONS = 4
RETENTION = timedelta(days=90)

METRICS_TOML = """
[metrics.haiku_rating]
type = "boolean"
level = "inference"
optimize = "max"

[metrics.haiku_stars]
type = "float"
min = 1
max = 5
optimize = "max"
"""

TOPICS = ("rain", "autumn", "harbour", "moss", "lantern", "frost", "heron", "tea")
MODELS = ("gpt-haiku-a", "gpt-haiku-b")


def config_toml(
    window: str = "1s", max_window_events: int = 50_000, windows_in_flight: int = 2
) -> str:
    """The worker's metric config: the bench metrics and the window under test."""
    return (
        f'[pipeline]\nwindow = "{window}"\nretention = "90d"\n'
        f"max_window_events = {max_window_events}\nwindows_in_flight = {windows_in_flight}\n"
        f"{METRICS_TOML}"
    )


def registry() -> MetricRegistry:
    return registry_from_mapping(
        {
            "metrics": {
                "haiku_rating": {"type": "boolean", "level": "inference", "optimize": "max"},
                "haiku_stars": {"type": "float", "min": 1, "max": 5, "optimize": "max"},
            },
        }
    )


class Message(NamedTuple):
    is_feedback: bool
    key: bytes
    value: bytes


@dataclass(frozen=True)
class EventSet:
    """Messages in production order."""

    messages: list[Message]
    predictions: int
    feedback: int
    early_feedback: int

    @property
    def events(self) -> int:
        return len(self.messages)


# A record decoded without a broker (tests, bench).
Record = PlainRecord

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def prediction_payload(rng: random.Random, now_ms: int) -> tuple[str, bytes]:
    """(prediction id, JSON bytes) of one prediction as the SDK would send it."""
    pid = str(uuid7(now_ms))
    topic = rng.choice(TOPICS)
    body: dict[str, Any] = {
        "prediction_id": pid,
        "application": "generate_haiku",
        "model": rng.choice(MODELS),
        "inputs": {"topic": topic, "temperature": 0.7},
        "outputs": {"haiku": f"{topic} at dusk / five seven five syllables / the worker joins it"},
        "tags": {"env": "bench"},
        "timestamp": now_ms,
    }
    return pid, _dumps(body).encode()


def feedback_payload(rng: random.Random, prediction_id: str, now_ms: int) -> bytes:
    if rng.random() < 0.5:
        metric: dict[str, Any] = {"metric": "haiku_rating", "value": rng.random() < 0.7}
        source = {"type": "end_user"}
    else:
        metric = {"metric": "haiku_stars", "value": float(rng.randint(1, 5))}
        source = {"type": "llm_judge", "id": "judge-v1"}
    body = {
        "feedback_id": str(uuid7(now_ms)),
        **metric,
        "prediction_id": prediction_id,
        "source": source,
        "metadata": {"ui": "bench"},
        "timestamp": now_ms,
    }
    return _dumps(body).encode()


def generate(events: int, seed: int = 7, spread: int = 2_000) -> EventSet:
    """``events`` messages: predictions in order, each feedback placed up to ``spread`` messages
    after its prediction, or (20% of them) up to ``spread`` messages before it."""
    rng = random.Random(seed)
    n_feedback = round(events * FEEDBACK_SHARE)
    n_predictions = events - n_feedback
    now_ms = int(time.time() * 1000)
    keyed: list[tuple[float, Message]] = []
    ids: list[str] = []
    for i in range(n_predictions):
        pid, value = prediction_payload(rng, now_ms + i // 100)
        ids.append(pid)
        keyed.append((float(i), Message(False, pid.encode(), value)))
    early = 0
    for target in rng.sample(range(n_predictions), n_feedback):
        before = rng.random() < EARLY_SHARE
        early += before
        shift = rng.uniform(1, spread) * (-1 if before else 1)
        value = feedback_payload(rng, ids[target], now_ms + target // 100 + 1_000)
        keyed.append((target + shift, Message(True, ids[target].encode(), value)))
    keyed.sort(key=lambda item: item[0])
    messages = [m for _, m in keyed]
    # The bench's payloads must be what the worker accepts: check a sample with the wire models.
    for m in messages[:: max(1, len(messages) // 200)]:
        (Feedback if m.is_feedback else Prediction).model_validate_json(m.value)
    return EventSet(messages, n_predictions, n_feedback, early)


async def produce(bootstrap: str, topics: TopicNames, events: EventSet) -> float:
    """Create the topics (4 partitions, co-partitioned) and send every message; returns seconds."""
    await create_topics(bootstrap, topics, partitions=PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for m in events.messages:
            topic = topics.feedback if m.is_feedback else topics.predictions
            pending.append(await producer.send(topic, value=m.value, key=m.key))
            if len(pending) >= 20_000:
                for fut in pending:
                    await fut
                pending.clear()
        for fut in pending:
            await fut
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


def as_records(messages: Iterable[Message], topics: TopicNames) -> list[Record]:
    ts = int(time.time() * 1000)
    return [
        Record(
            topics.feedback if m.is_feedback else topics.predictions,
            hash(m.key) % PARTITIONS,
            offset,
            ts,
            m.key,
            m.value,
        )
        for offset, m in enumerate(messages)
    ]


def decode(messages: Sequence[Message], topics: TopicNames, reg: MetricRegistry) -> DecodedBatch:
    """The rows the worker would write for these messages (its own decoder)."""
    decoder = Decoder(reg, topics, RETENTION)
    batch = decoder.decode(as_records(messages, topics), datetime.now(UTC))
    if batch.dead_letters:
        raise RuntimeError(f"bench data produced dead letters: {batch.dead_letters[0].reason}")
    return batch
