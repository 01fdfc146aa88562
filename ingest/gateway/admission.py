"""Admission: a request's event checked exactly as the worker will check it, before it is sent.

The gateway fills in what a caller may leave out (a UUIDv7 id, the timestamp: both fixed here,
so a retried request can be published again byte for byte), encodes the event, and runs the
worker's own ``Decoder`` on those bytes.  Whatever the decoder would dead-letter is refused with
its field and reason; whatever it accepts is what gets published.  So the gateway and the
worker cannot disagree about an event, and nothing the gateway answered 2xx for becomes a dead
letter later (short of an event aged past retention on its way).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json

from ingest.gateway.errors import Refusal, bad_request
from ingest.metrics.registry import MetricRegistry
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from ingest.wire.events import EPOCH_NUMBERS, Timestamp, error_text, selector_text
from workers.postgres.idempotent_requests import PublishedEvent
from workers.stream.decode import DecodedBatch, Decoder


@dataclass(frozen=True)
class _Record:
    """The part of a Kafka record the decoder reads, for an event not sent yet."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp: int
    partition: int = -1
    offset: int = -1


_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp, config=EPOCH_NUMBERS)


@dataclass(frozen=True)
class Admitted:
    """An event ready to publish and the ids to answer with."""

    event: PublishedEvent
    ids: dict[str, Any]


class Admission:
    def __init__(
        self,
        registry: MetricRegistry,
        topics: TopicNames,
        retention: timedelta,
        max_event_bytes: int,
        selectable_tags: tuple[str, ...] = (),
    ) -> None:
        self.registry = registry
        self.topics = topics
        self.max_event_bytes = max_event_bytes
        self._decoder = Decoder(registry, topics, retention, selectable_tags)

    def use(self, registry: MetricRegistry) -> None:
        """Check events against ``registry`` from now on (metrics defined at run time)."""
        self.registry = registry
        self._decoder.use(registry)

    def prediction(self, fields: dict[str, Any], now: datetime) -> Admitted:
        fields = dict(fields)
        at = self._event_time(fields, now)
        if "prediction_id" not in fields or fields["prediction_id"] is None:
            fields["prediction_id"] = str(uuid7(int(at.timestamp() * 1000)))
        value = self._encode(fields)
        decoded = self._decode(self.topics.predictions, value, now)
        row = decoded.predictions[0]
        prediction_id = str(row.prediction_id)
        join_key = row.join_key if row.join_key is not None else prediction_id
        ids: dict[str, Any] = {"prediction_id": prediction_id, "join_key": join_key}
        if decoded.feedback:
            ids["feedback_ids"] = {row.metric: str(row.feedback_id) for row in decoded.feedback}
        return Admitted(PublishedEvent(self.topics.predictions, join_key, value), ids)

    def feedback(self, fields: dict[str, Any], now: datetime) -> Admitted:
        fields = dict(fields)
        self._event_time(fields, now)
        if "feedback_id" not in fields or fields["feedback_id"] is None:
            fields["feedback_id"] = str(uuid7(int(now.timestamp() * 1000)))
        value = self._encode(fields)
        decoded = self._decode(self.topics.feedback, value, now)
        if decoded.selectors:
            selector = decoded.selectors[0]
            key, feedback_id = selector_text(selector.selector), selector.feedback_id
        else:
            row = decoded.feedback[0]
            key = str(row.target_prediction_id or row.target_join_key or row.target_episode_id)
            feedback_id = row.feedback_id
        return Admitted(
            PublishedEvent(self.topics.feedback, key, value), {"feedback_id": str(feedback_id)}
        )

    @staticmethod
    def _event_time(fields: dict[str, Any], now: datetime) -> datetime:
        """The event's time; set to ``now`` when the caller gave none."""
        given = fields.get("timestamp")
        if given is None:
            fields["timestamp"] = now.isoformat()
            return now
        try:
            return _TIMESTAMP.validate_python(given)
        except ValidationError as exc:
            raise bad_request("timestamp", error_text(exc.errors()[0])) from None

    def _encode(self, fields: dict[str, Any]) -> bytes:
        value = to_json(fields)
        if len(value) > self.max_event_bytes:
            raise Refusal(
                413,
                "(event)",
                f"{len(value)} bytes encoded; one event may be at most {self.max_event_bytes}",
            )
        return value

    def _decode(self, topic: str, value: bytes, now: datetime) -> DecodedBatch:
        record = _Record(topic, None, value, int(now.timestamp() * 1000))
        decoded = self._decoder.decode([record], now)
        if decoded.dead_letters:
            dead = decoded.dead_letters[0]
            # A validation reason lists its fields itself ("application: Field required; ...").
            reason = dead.reason.removeprefix(f"{dead.error_field}: ")
            raise bad_request(dead.error_field, reason)
        return decoded
