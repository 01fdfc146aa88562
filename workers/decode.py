"""Decode: Kafka records in, rows ready for COPY or dead letters out.  Pure, no I/O.

This is the only per-event Python work on the hot path: one ``model_validate_json`` and a metric
check per message.  Every failure becomes a ``DeadLetter`` carrying the original bytes, the field
at fault and the reason -- a bad message is recorded and counted, it never stops the partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol
from uuid import UUID

from pydantic import ValidationError
from pydantic_core import to_json

from ingest.events import Feedback, Prediction, error_text
from ingest.metric_config import FieldError, MetricRegistry
from ingest.topics import TopicNames

log = logging.getLogger("feedbackflow.decode")

# Event times further ahead than this are a producer's clock bug, not data to keep.
MAX_FUTURE_SKEW = timedelta(days=1)
# A UUIDv7 prediction id carries a time; feedback finds its prediction within this span of it.
ID_TIME_SPAN = timedelta(days=1)
ID_TIME_SPAN_MILLIS = ID_TIME_SPAN / timedelta(milliseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def read_at_micros(now: datetime) -> int:
    """A batch's read time, as rows carry it: microseconds since the Unix epoch, computed once
    per batch.  As a datetime, asyncpg's COPY encoded it again for every row (0.65 us of a
    prediction row's 2.07 us, measured); the window's SQL turns it back into a time
    (join_sql.INGESTED_AT)."""
    return (now - EPOCH) // MICROSECOND


class KafkaRecord(Protocol):
    """The part of aiokafka's ``ConsumerRecord`` decoding needs."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class PredictionRow(NamedTuple):
    prediction_id: UUID
    # None: no join key was chosen, and the key is the id as text, which the window's SQL spells
    # (join_sql.PREDICTION_JOIN_KEY): str(UUID) cost 5% of the worker's time (py-spy).
    join_key: str | None
    ts: datetime
    episode_id: UUID | None
    application: str
    model: str | None
    inputs: str
    outputs: str
    tags: str
    ingested_at: int  # read_at_micros: the same for a whole batch


class FeedbackRow(NamedTuple):
    feedback_id: UUID
    join_key: str
    ts: datetime
    metric: str
    metric_type: str
    target_kind: str
    target_prediction_id: UUID | None
    target_join_key: str | None
    target_episode_id: UUID | None
    target_id_time: datetime | None
    value_bool: bool | None
    value_float: float | None
    value_text: str | None
    value_json: str | None
    error_code: str | None
    error_message: str | None
    rationale: str | None
    source_type: str | None
    source_id: str | None
    tags: str
    metadata: str
    ingested_at: int  # read_at_micros: the same for a whole batch


class DeadLetter(NamedTuple):
    topic: str
    kafka_partition: int
    kafka_offset: int
    kafka_ts: datetime
    message_key: bytes | None
    payload: bytes
    error_field: str
    reason: str
    received_at: datetime


@dataclass
class DecodedBatch:
    predictions: list[PredictionRow] = field(default_factory=list)
    feedback: list[FeedbackRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _dumps(value: object) -> str:
    """JSON text for a jsonb column: pydantic-core's encoder is ~6x the stdlib's per call, and
    empty maps (most tags) skip it altogether."""
    if not value and isinstance(value, dict):
        return "{}"
    return to_json(value).decode()


def _uuid7_millis(value: UUID) -> int | None:
    """The epoch milliseconds a UUIDv7 carries (RFC 9562: version 7, variant 10), else None;
    plain integer arithmetic, since ``UUID.version`` alone costs a third of a microsecond."""
    n = value.int
    if (n >> 76) & 0xF != 7 or (n >> 62) & 0x3 != 0b10:
        return None
    return n >> 80


def _uuid7_time(value: UUID) -> datetime | None:
    millis = _uuid7_millis(value)
    return None if millis is None else _at_epoch_millis(millis)


def _event_time(timestamp: datetime | None, record: KafkaRecord) -> datetime:
    """The event's time in UTC: pydantic's own zone object would cost a call into pydantic-core
    at every later comparison and in asyncpg's encoding; UTC takes Python's same-zone path."""
    if timestamp is None:
        return _kafka_time(record)
    return timestamp if timestamp.tzinfo is UTC else timestamp.astimezone(UTC)


def _kafka_time(record: KafkaRecord) -> datetime:
    """Only for events without a timestamp, and dead letters: most events never need it."""
    return _at_epoch_millis(record.timestamp)


def _at_epoch_millis(millis: int) -> datetime:
    return EPOCH + timedelta(0, 0, millis * 1000)


def _validation_reason(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return "(payload)", f"invalid JSON: {first['msg']}"
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{where}: {error_text(err)}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    head = ".".join(str(p) for p in first["loc"]) or "(event)"
    return head, "; ".join(parts) + more


class Decoder:
    """Turns records of the two input topics into rows; the clock and config are injected."""

    def __init__(self, registry: MetricRegistry, topics: TopicNames) -> None:
        self.registry = registry
        self.topics = topics
        self.retention = registry.pipeline.retention

    def decode(self, records: Iterable[KafkaRecord], now: datetime) -> DecodedBatch:
        batch = DecodedBatch()
        oldest = now - self.retention
        newest = now + MAX_FUTURE_SKEW
        read_at = read_at_micros(now)
        predictions_topic, feedback_topic = self.topics.predictions, self.topics.feedback
        for record in records:
            try:
                if record.value is None:
                    raise FieldError("(payload)", "empty message (tombstone)")
                if record.topic == predictions_topic:
                    prediction = self._prediction(record, read_at)
                    self._check_time(prediction.ts, oldest, newest)
                    _check_id_time(prediction.prediction_id, prediction.ts)
                    batch.predictions.append(prediction)
                elif record.topic == feedback_topic:
                    feedback = self._feedback(record, read_at)
                    self._check_time(feedback.ts, oldest, newest)
                    batch.feedback.append(feedback)
                else:
                    raise FieldError("(topic)", f"not an input topic: {record.topic}")
            except ValidationError as exc:
                where, reason = _validation_reason(exc)
                batch.dead_letters.append(self._dead(record, now, where, reason))
            except FieldError as exc:
                batch.dead_letters.append(self._dead(record, now, exc.field, exc.reason))
            except Exception as exc:
                log.exception(
                    "unexpected error decoding %s/%d/%d",
                    record.topic,
                    record.partition,
                    record.offset,
                )
                reason = f"cannot decode: {exc!r}"
                batch.dead_letters.append(self._dead(record, now, "(event)", reason))
        return batch

    def _check_time(self, ts: datetime, oldest: datetime, newest: datetime) -> None:
        if ts < oldest:
            raise FieldError(
                "timestamp", f"{ts.isoformat()} is older than the {_days(self.retention)} retention"
            )
        if ts > newest:
            raise FieldError("timestamp", f"{ts.isoformat()} is more than 1 day in the future")

    def _prediction(self, record: KafkaRecord, read_at: int) -> PredictionRow:
        event = Prediction.model_validate_json(record.value or b"")
        return PredictionRow(
            event.prediction_id,
            event.join_key,
            _event_time(event.timestamp, record),
            event.episode_id,
            event.application,
            event.model,
            _dumps(event.inputs),
            _dumps(event.outputs),
            _dumps(event.tags),
            read_at,
        )

    def _feedback(self, record: KafkaRecord, read_at: int) -> FeedbackRow:
        event = Feedback.model_validate_json(record.value or b"")
        metric, value = self.registry.check(event)
        error, source = event.error, event.source
        return FeedbackRow(
            event.feedback_id,
            event.target,
            _event_time(event.timestamp, record),
            event.metric,
            metric.type,
            event.target_kind,
            event.prediction_id,
            event.join_key,
            event.episode_id,
            _uuid7_time(event.prediction_id) if event.prediction_id is not None else None,
            value.boolean,
            value.number,
            value.text,
            None if value.json is None else _dumps(value.json),
            error.code if error else None,
            error.message if error else None,
            event.rationale,
            source.type if source else None,
            source.id if source else None,
            _dumps(event.tags),
            _dumps(event.metadata),
            read_at,
        )

    @staticmethod
    def _dead(record: KafkaRecord, now: datetime, where: str, reason: str) -> DeadLetter:
        return DeadLetter(
            record.topic,
            record.partition,
            record.offset,
            _kafka_time(record),
            record.key,
            record.value or b"",
            where,
            reason,
            now,
        )


def _check_id_time(prediction_id: UUID, ts: datetime) -> None:
    """Feedback looks a UUIDv7 prediction up near the time its id carries (one or two day
    partitions instead of all of them), so the id must agree with the prediction's timestamp.
    Compared in epoch milliseconds: a datetime is only built for the error message."""
    millis = _uuid7_millis(prediction_id)
    if millis is not None and abs(millis - ts.timestamp() * 1000) > ID_TIME_SPAN_MILLIS:
        id_time = _at_epoch_millis(millis)
        raise FieldError(
            "prediction_id",
            f"UUIDv7 time {id_time.isoformat()} is more than a day from timestamp "
            f"{ts.isoformat()}: mint UUIDv7 ids at the event's time, or use another UUID version",
        )


def _days(delta: timedelta) -> str:
    return f"{delta.days}d" if delta.days and not delta.seconds else f"{delta.total_seconds():g}s"
