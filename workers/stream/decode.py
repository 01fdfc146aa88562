"""Decode: Kafka records in, rows ready for COPY or dead letters out.  Pure, no I/O.

This is the only per-event Python work on the hot path: the wire models' JSON validation and a
metric check per message.  Every failure becomes a ``DeadLetter`` carrying the original bytes,
the field at fault and the reason: a bad message is recorded and counted, it never stops the
partition.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol
from uuid import UUID

from pydantic import JsonValue, ValidationError
from pydantic_core import to_json

from ingest.metrics.registry import FieldError, MetricRegistry
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from ingest.wire.events import Feedback, Prediction, error_text
from workers.stream.json_checks import (
    BACKSLASH,
    INFINITY,
    MEMBER,
    NAN,
    NUL_ESCAPE,
    check_members,
    printable,
    reject_non_finite,
    reject_nul,
)
from workers.time_spans import ID_TIME_SPAN, MAX_FUTURE_SKEW

log = logging.getLogger("feedbackflow.decode")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
ID_TIME_SPAN_MICROS = ID_TIME_SPAN // MICROSECOND


def micros(at: datetime) -> int:
    """A time as rows carry it: microseconds since the Unix epoch.

    asyncpg's COPY encodes a datetime in Python-level steps, a measurable cost per value and row
    (docs/performance.md), and an integer in a few instructions; the window's SQL turns the
    integers back into times once (join_sql.STAGED_PREDICTIONS).  Integers also compare and bound
    a window (min, max, days) without a call per row."""
    return (at - EPOCH) // MICROSECOND


def as_time(value: int) -> datetime:
    """The datetime of ``micros``: for bounds, error messages and tests, never per row."""
    return EPOCH + value * MICROSECOND


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


class PlainRecord(NamedTuple):
    """A ``KafkaRecord`` without a broker: a dead letter decoded again
    (``workers.stream.unknown_metrics``), and tests."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class PredictionRow(NamedTuple):
    """A prediction as staged for COPY: what the worker knows; the window's SQL adds the rest."""

    prediction_id: UUID
    # None: no join key was chosen, and the key is the id as text, which the window's SQL spells
    # (join_sql.STAGED_PREDICTIONS): str(UUID) was a measurable share of the worker's time in
    # py-spy (docs/performance.md).
    join_key: str | None
    ts: int  # micros: the event time
    episode_id: UUID | None
    application: str
    model: str | None
    inputs: str
    outputs: str
    tags: str
    ingested_at: int  # micros: the batch's read time


class FeedbackRow(NamedTuple):
    """A feedback as staged for COPY.  Its join key (the target as text) and target kind follow
    from the three target columns and are spelled by the window's SQL (join_sql.STAGED_FEEDBACK),
    not per event here."""

    feedback_id: UUID
    ts: int  # micros: the event time
    metric: str
    metric_type: str
    target_prediction_id: UUID | None
    target_join_key: str | None
    target_episode_id: UUID | None
    target_id_time: int | None  # micros: the time a UUIDv7 target carries
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
    ingested_at: int  # micros: the batch's read time


# The models' own validators, called directly: the same validation as ``model_validate_json``
# without that method's Python wrapper, which cost a measurable share of a prediction's
# validation (docs/performance.md).
_validate_prediction = Prediction.__pydantic_validator__.validate_json
_validate_feedback = Feedback.__pydantic_validator__.validate_json

# Rows are built with tuple.__new__: a NamedTuple's own constructor is a Python function, which
# cost a measurable share of a prediction's decode (docs/performance.md).
_row = tuple.__new__
EMPTY = b"{}"


class SelectorRow(NamedTuple):
    """A feedback aimed at every prediction carrying some tags (``tag_selector``), as staged.
    It is resolved in the window's transaction into one feedback per matched prediction
    (``workers.postgres.selectors``)."""

    feedback_id: UUID
    ts: int  # micros
    metric: str
    metric_type: str
    selector: list[str]  # the items, sorted, once each
    probe_tag: str  # the indexed tag (feedbackflow.prediction_tags) looked up first
    pairs: str  # JSON {key: value}: the `key=value` items
    keys: list[str]  # the `key` items: present, any value
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
    ingested_at: int


class _Selected(Exception):
    """Raised by ``Decoder._feedback`` for a tag-selector feedback, so that the common path
    (a feedback row appended) pays no test per event."""

    def __init__(self, row: SelectorRow) -> None:
        self.row = row


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

    def as_record(self) -> PlainRecord:
        """The record this dead letter was made of, to decode it again."""
        return PlainRecord(
            self.topic,
            self.kafka_partition,
            self.kafka_offset,
            micros(self.kafka_ts) // 1000,
            self.message_key,
            self.payload,
        )


@dataclass
class DecodedBatch:
    predictions: list[PredictionRow] = field(default_factory=list)
    feedback: list[FeedbackRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    selectors: list[SelectorRow] = field(default_factory=list)


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

    def __init__(
        self,
        registry: MetricRegistry,
        topics: TopicNames,
        retention: timedelta,
        selectable_tags: Iterable[str] = (),
    ) -> None:
        self.registry = registry
        self.topics = topics
        self.retention = retention
        self.selectable_tags = frozenset(selectable_tags)

    def use(self, registry: MetricRegistry) -> None:
        """Check events against ``registry`` from now on (metrics defined at run time)."""
        self.registry = registry

    def decode(self, records: Iterable[KafkaRecord], now: datetime) -> DecodedBatch:
        batch = DecodedBatch()
        bounds = _TimeBounds(micros(now - self.retention), micros(now + MAX_FUTURE_SKEW))
        read_at = micros(now)
        predictions_topic, feedback_topic = self.topics.predictions, self.topics.feedback
        predictions, feedback = batch.predictions, batch.feedback
        to_prediction, to_feedback = self._prediction, self._feedback
        for record in records:
            try:
                topic = record.topic
                if record.value is None:
                    raise FieldError("(payload)", "empty message (tombstone)")
                if topic == predictions_topic:
                    predictions.append(to_prediction(record, read_at, bounds, feedback))
                elif topic == feedback_topic:
                    feedback.append(to_feedback(record, read_at, bounds))
                else:
                    raise FieldError("(topic)", f"not an input topic: {topic}")
            except _Selected as selected:
                batch.selectors.append(selected.row)
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

    # The two methods below run once per event and are written for it: the helpers they would
    # call (time in micros, its bounds, a UUIDv7's time, JSON text) are spelled inline, since
    # each Python call here is a measurable part of a prediction's whole decode
    # (docs/performance.md).
    def _prediction(
        self,
        record: KafkaRecord,
        read_at: int,
        bounds: _TimeBounds,
        feedback_rows: list[FeedbackRow],
    ) -> PredictionRow:
        raw = record.value or b""
        event: Prediction = _validate_prediction(raw)
        if BACKSLASH in raw and NUL_ESCAPE in raw:
            reject_nul(event)
        timestamp = event.timestamp
        ts = record.timestamp * 1000 if timestamp is None else (timestamp - EPOCH) // MICROSECOND
        if not bounds.oldest <= ts <= bounds.newest:
            raise bounds.error(ts, self.retention)
        prediction_id = event.prediction_id
        n = prediction_id.int  # a UUIDv7 (version 7, variant 10) carries its time
        if (
            (n >> 76) & 0xF == 7
            and (n >> 62) & 0x3 == 0b10
            and abs((n >> 80) * 1000 - ts) > ID_TIME_SPAN_MICROS
        ):
            raise _id_time_error(n >> 80, ts)
        # JSON text for the jsonb columns; pydantic-core's encoder is several times faster
        # than the stdlib's per call (docs/performance.md), and empty maps (most tags) skip it.
        inputs, outputs, tags = event.inputs, event.outputs, event.tags
        inputs_json = to_json(inputs) if inputs else EMPTY
        outputs_json = to_json(outputs) if outputs else EMPTY
        tags_json = to_json(tags) if tags else EMPTY
        # What Postgres or the contract cannot take (workers.stream.json_checks): one search of
        # the encoded texts for the literals of a non-finite number, and the payload's members
        # counted against the parsed object's, which for flat maps their lengths give.
        encoded = inputs_json + outputs_json
        if NAN in encoded or INFINITY in encoded:
            reject_non_finite({"inputs": inputs, "outputs": outputs}, "")
        embedded: tuple[FeedbackRow, ...] = ()
        embedded_members = 0
        if event.feedback:
            embedded, embedded_members = self._embedded(event.feedback, prediction_id, ts, read_at)
        members = raw.count(MEMBER)
        fields = len(event.__pydantic_fields_set__) + embedded_members
        if members != fields + len(inputs) + len(outputs) + len(tags):
            canonical = inputs_json.count(MEMBER) + outputs_json.count(MEMBER)
            check_members(raw, members, fields + canonical + tags_json.count(MEMBER))
        if embedded:
            feedback_rows.extend(embedded)
        return _row(
            PredictionRow,
            (
                prediction_id,
                event.join_key,
                ts,
                event.episode_id,
                event.application,
                event.model,
                inputs_json.decode(),
                outputs_json.decode(),
                tags_json.decode(),
                read_at,
            ),
        )

    def _embedded(
        self, given: dict[str, JsonValue], prediction_id: UUID, ts: int, read_at: int
    ) -> tuple[tuple[FeedbackRow, ...], int]:
        """A prediction's own feedback as rows joined to it, at its time, and the JSON members
        they spelled (for the duplicate-key count).  Ids are derived from the prediction id
        and the metric, so a replay or a retried send is the same feedback, stored once."""
        n = prediction_id.int
        id_time = (n >> 80) * 1000 if (n >> 76) & 0xF == 7 and (n >> 62) & 0x3 == 0b10 else None
        rows, members = [], len(given)
        for name, raw_value in given.items():
            metric, value = self.registry.embedded(name, raw_value)
            value_text = None
            if value.json is not None:
                value_text, value_members = _json_value(value.json, f"feedback.{name}")
                members += value_members
            feedback_id = uuid7(ts // 1000, _derived_bits(prediction_id, name))
            rows.append(
                _row(
                    FeedbackRow,
                    (
                        feedback_id,
                        ts,
                        name,
                        metric.type,
                        prediction_id,
                        None,
                        None,
                        id_time,
                        value.boolean,
                        value.number,
                        value.text,
                        value_text,
                        None,
                        None,
                        None,
                        None,
                        None,
                        "{}",
                        "{}",
                        read_at,
                    ),
                )
            )
        return tuple(rows), members

    def _feedback(self, record: KafkaRecord, read_at: int, bounds: _TimeBounds) -> FeedbackRow:
        raw = record.value or b""
        event: Feedback = _validate_feedback(raw)
        if BACKSLASH in raw and NUL_ESCAPE in raw:
            reject_nul(event)
        metric, value = self.registry.check(event)
        timestamp = event.timestamp
        ts = record.timestamp * 1000 if timestamp is None else (timestamp - EPOCH) // MICROSECOND
        if not bounds.oldest <= ts <= bounds.newest:
            raise bounds.error(ts, self.retention)
        target = event.prediction_id
        id_time = None
        if target is not None:
            n = target.int
            if (n >> 76) & 0xF == 7 and (n >> 62) & 0x3 == 0b10:
                id_time = (n >> 80) * 1000
        error, source, value_json = event.error, event.source, value.json
        tags, metadata = event.tags, event.metadata
        tags_json = to_json(tags) if tags else EMPTY
        metadata_json = to_json(metadata) if metadata else EMPTY
        fields = len(event.__pydantic_fields_set__) + len(tags) + len(metadata)
        if source is not None:
            fields += len(source.__pydantic_fields_set__)
        if error is not None:
            fields += len(error.__pydantic_fields_set__)
        value_text, value_members = None, 0
        if value_json is not None:
            value_text, value_members = _json_value(value_json)
        members = raw.count(MEMBER)
        if members != fields + value_members:
            check_members(raw, members, fields + value_members)
        row = _row(
            FeedbackRow,
            (
                event.feedback_id,
                ts,
                event.metric,
                metric.type,
                target,
                event.join_key,
                event.episode_id,
                id_time,
                value.boolean,
                value.number,
                value.text,
                value_text,
                error.code if error else None,
                error.message if error else None,
                event.rationale,
                source.type if source else None,
                source.id if source else None,
                tags_json.decode(),
                metadata_json.decode(),
                read_at,
            ),
        )
        if event.tag_selector is not None:
            raise _Selected(self._selector(row, event.tag_selector))
        return row

    def _selector(self, row: FeedbackRow, items: list[str]) -> SelectorRow:
        """The selector form of a feedback: its items parsed, and the indexed tag to probe (a
        ``key=value`` item before a bare ``key``: it matches fewer predictions)."""
        pairs: dict[str, str] = {}
        keys: list[str] = []
        for item in sorted(set(items)):
            key, equals, value = item.partition("=")
            if not equals:
                keys.append(key)
            elif pairs.setdefault(key, value) != value:
                raise FieldError("tag_selector", f"tag {key!r} cannot equal two values")
        indexed = [f"{k}={v}" for k, v in pairs.items() if k in self.selectable_tags]
        indexed += [k for k in keys if k in self.selectable_tags]
        if not indexed:
            selectable = sorted(self.selectable_tags) or "none"
            raise FieldError(
                "tag_selector",
                f"needs an item on a selectable tag key (pipeline.selectable_tags: {selectable}):"
                " only those tags are indexed, so a selector never reads every prediction",
            )
        return _row(
            SelectorRow,
            (
                row.feedback_id,
                row.ts,
                row.metric,
                row.metric_type,
                sorted(set(items)),
                indexed[0],
                to_json(pairs).decode(),
                keys,
                *row[FeedbackRow._fields.index("value_bool") :],
            ),
        )

    @staticmethod
    def _dead(record: KafkaRecord, now: datetime, where: str, reason: str) -> DeadLetter:
        return DeadLetter(
            record.topic,
            record.partition,
            record.offset,
            as_time(record.timestamp * 1000),
            record.key,
            record.value or b"",
            printable(where),
            printable(reason),
            now,
        )


def _json_value(value: JsonValue, where: str = "value") -> tuple[str, int]:
    """A JSON value's text, and the object members it spells (for the duplicate-key count)."""
    encoded = to_json(value)
    if NAN in encoded or INFINITY in encoded:
        reject_non_finite(value, where)
    return encoded.decode(), encoded.count(MEMBER)


def _derived_bits(prediction_id: UUID, metric: str) -> int:
    """74 bits of SHA-256 over the prediction id and a metric name: the random part of an
    embedded feedback's UUIDv7, the same on every replay."""
    digest = hashlib.sha256(prediction_id.bytes + metric.encode()).digest()
    return int.from_bytes(digest[:10], "big") >> 6


class _TimeBounds(NamedTuple):
    """The event times a batch keeps, in micros: within retention, at most a day ahead."""

    oldest: int
    newest: int

    def error(self, at: int, retention: timedelta) -> FieldError:
        if at < self.oldest:
            return FieldError(
                "timestamp",
                f"{as_time(at).isoformat()} is older than the {_days(retention)} retention",
            )
        return FieldError(
            "timestamp",
            f"{as_time(at).isoformat()} is more than {_days(MAX_FUTURE_SKEW)} in the future",
        )


def _id_time_error(id_millis: int, ts: int) -> FieldError:
    """Feedback looks a UUIDv7 prediction up near the time its id carries (one or two day
    partitions instead of all of them), so the id must agree with the prediction's timestamp."""
    return FieldError(
        "prediction_id",
        f"UUIDv7 time {as_time(id_millis * 1000).isoformat()} is more than a day from "
        f"timestamp {as_time(ts).isoformat()}: mint UUIDv7 ids at the event's time, or use "
        "another UUID version",
    )


def _days(delta: timedelta) -> str:
    return f"{delta.days}d" if delta.days and not delta.seconds else f"{delta.total_seconds():g}s"
