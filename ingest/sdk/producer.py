"""The Python producer SDK: ``log_prediction`` and ``log_feedback`` over aiokafka.

Events are validated here, before they are sent, with the same models the worker uses, so a
mistake surfaces as a ``ValueError`` in the caller's stack instead of a dead letter later.  Ids are
UUIDv7 (time-ordered: good for B-tree locality, and they let the worker tell a prediction's age
from its id).  The producer uses ``acks=all``, is idempotent where the broker allows, and
lingers a few milliseconds so that sends from a busy service leave in batches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaProducer
from pydantic import TypeAdapter, ValidationError

from ingest.kafka_client import ClientSettings, Idempotence, start_producer
from ingest.metrics.registry import MetricRegistry
from ingest.topics import TopicNames
from ingest.wire.events import EPOCH_NUMBERS, Feedback, Prediction, Timestamp, error_text

_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp, config=EPOCH_NUMBERS)


def uuid7(now_ms: int | None = None, bits: int | None = None) -> UUID:
    """RFC 9562 UUIDv7: 48-bit Unix milliseconds, version, 74 random bits (or ``bits``, for
    an id derived from something else)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big") if bits is None else bits
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return UUID(int=value)


def _validation_message(kind: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{where}: {error_text(err)}")
    return f"invalid {kind}: " + "; ".join(parts)


def build_prediction(**fields: Any) -> Prediction:
    """A validated prediction; its UUIDv7 id is minted at its timestamp (a backfill's old
    timestamp included), which is what the worker relies on to find it quickly."""
    fields.setdefault("timestamp", datetime.now(UTC))
    if "prediction_id" not in fields:
        try:
            at = _TIMESTAMP.validate_python(fields["timestamp"])
        except ValidationError as exc:
            raise ValueError(
                f"invalid prediction: timestamp: {error_text(exc.errors()[0])}"
            ) from None
        fields["prediction_id"] = uuid7(int(at.timestamp() * 1000))
    try:
        return Prediction.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(_validation_message("prediction", exc)) from None


def build_feedback(registry: MetricRegistry | None = None, **fields: Any) -> Feedback:
    fields.setdefault("feedback_id", uuid7())
    fields.setdefault("timestamp", datetime.now(UTC))
    try:
        event = Feedback.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(_validation_message("feedback", exc)) from None
    if registry is not None:
        registry.check(event)  # FieldError is a ValueError naming the field
    return event


class FeedbackflowProducer:
    """``async with FeedbackflowProducer() as ff: await ff.log_prediction(...)``.

    ``log_*`` return once the event is handed to the batching producer (not yet acknowledged),
    so a hot loop does not wait for a round trip per event; ``flush()`` waits for acknowledgement
    and ``close()`` flushes.  Pass the metric registry to check feedback against the metric config
    before sending.

    The connection comes from the settings the worker reads too (``ingest.kafka_client``:
    ``FEEDBACKFLOW_KAFKA_BOOTSTRAP``, ``FEEDBACKFLOW_KAFKA_IDEMPOTENCE``, TLS and SASL as
    ``FEEDBACKFLOW_KAFKA__*``, ``FEEDBACKFLOW_TOPIC_PREFIX``), or ``settings=``; the arguments
    override them.  Idempotence is ``auto`` unless said: on when the broker takes it, else off
    with one warning (the embedded tansu broker has no ``InitProducerId``).
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        topics: TopicNames | None = None,
        registry: MetricRegistry | None = None,
        linger_ms: int = 5,
        idempotent: Idempotence | None = None,
        settings: ClientSettings | None = None,
        **producer_options: Any,
    ) -> None:
        settings = settings or ClientSettings()
        given = {"kafka_bootstrap": bootstrap_servers, "kafka_idempotence": idempotent}
        self.settings = settings.model_copy(
            update={name: value for name, value in given.items() if value is not None}
        )
        self.topics = topics or TopicNames(self.settings.topic_prefix)
        self.registry = registry
        self._options = {"linger_ms": linger_ms, **producer_options}
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = await start_producer(self.settings, **self._options)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> FeedbackflowProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def flush(self) -> None:
        await self._started().flush()

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("start the producer first (or use it as `async with`)")
        return self._producer

    async def log_prediction(
        self,
        *,
        application: str,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Prediction:
        event = build_prediction(
            application=application,
            inputs=dict(inputs or {}),
            outputs=dict(outputs or {}),
            **fields,
        )
        if self.registry is not None and event.feedback:
            for name, value in event.feedback.items():
                self.registry.embedded(name, value)  # FieldError is a ValueError naming it
        await self.send_raw(
            self.topics.predictions, event.effective_join_key, event.model_dump_json().encode()
        )
        return event

    async def log_feedback(self, *, metric: str, **fields: Any) -> Feedback:
        event = build_feedback(self.registry, metric=metric, **fields)
        await self.send_raw(self.topics.feedback, event.target, event.model_dump_json().encode())
        return event

    async def send_raw(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        """Send bytes as they are (backfills, tests of malformed input); keyed by join key."""
        encoded = key.encode() if isinstance(key, str) else key
        await self._started().send(topic, value=value, key=encoded)
