"""A batch of file rows checked by the worker's own decoder: what the worker would store, and
what it would dead-letter, with the line and the reason.

The rows become the very bytes a producer would send and go through
``workers.stream.decode.Decoder``, so a backfill and the worker never disagree on what is valid
(``--dry-run`` included), and ``--direct`` stores the decoder's rows through the worker's sink.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from pydantic_core import to_json

from ingest.backfill.mapping import ColumnMapping, Kind, KindChoice
from ingest.backfill.sources import SourceRow
from ingest.backfill.stable_ids import with_id
from ingest.metrics.registry import FieldError, MetricRegistry
from ingest.topics import TopicNames
from ingest.wire.events import selector_text
from workers.stream.decode import DecodedBatch, Decoder

# The decoder's reason for a row past retention: counted on its own line of the report.
PAST_RETENTION = "older than the retention"
_TIME = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+(?:[+-]\d\d:\d\d|Z)?")


class FileRecord(NamedTuple):
    """A row as the decoder reads a Kafka record; the offset is the row's line number."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class Accepted(NamedTuple):
    """A valid row as it is published: topic, key (the join key, as the SDK keys it), bytes."""

    line: int
    topic: str
    key: bytes
    value: bytes


class Reject(NamedTuple):
    line: int
    field: str
    reason: str
    row: dict[str, Any] | None


@dataclass
class CheckedBatch:
    accepted: list[Accepted] = field(default_factory=list)
    decoded: DecodedBatch = field(default_factory=DecodedBatch)
    rejects: list[Reject] = field(default_factory=list)


def reason_group(field_name: str, reason: str) -> str:
    """The report's line for a reason: times taken out, so one cause is one line."""
    if "older than the" in reason and reason.endswith("retention"):
        return f"{field_name}: {PAST_RETENTION}"
    return f"{field_name}: {_TIME.sub('<time>', reason)}"


class RowChecker:
    def __init__(
        self,
        mapping: ColumnMapping,
        kind: KindChoice,
        registry: MetricRegistry,
        topics: TopicNames,
        retention: timedelta,
        selectable_tags: Sequence[str] = (),
        *,
        keep_bytes: bool = True,
        keep_rows: bool = True,
    ) -> None:
        """``keep_bytes``: accepted rows carry their key and bytes (to publish them);
        ``keep_rows``: the decoded rows are kept (to store them).  A batch holds only what its
        destination uses while it is written: the peak memory of a run is a few batches."""
        self.mapping, self.kind, self.registry, self.topics = mapping, kind, registry, topics
        self.decoder = Decoder(registry, topics, retention, selectable_tags)
        self.keep_bytes, self.keep_rows = keep_bytes, keep_rows

    def check(self, rows: Sequence[SourceRow], now: datetime) -> CheckedBatch:
        batch = CheckedBatch()
        # Tag-selector feedback apart: the decoder makes it a row of its own kind.
        by_kind: dict[Kind | Literal["selector"], list[FileRecord]] = {
            "prediction": [],
            "feedback": [],
            "selector": [],
        }
        originals: dict[int, SourceRow] = {}
        now_ms = int(now.timestamp() * 1000)
        for row in rows:
            originals[row.line] = row
            if row.fields is None:
                batch.rejects.append(Reject(row.line, "(row)", row.problem or "unreadable", None))
                continue
            try:
                kind, event = self.mapping.to_wire(row.fields, row.values, self.kind, self.registry)
                value = to_json(with_id(kind, event))
            except FieldError as exc:
                batch.rejects.append(Reject(row.line, exc.field, exc.reason, row.fields))
                continue
            topic = self.topics.predictions if kind == "prediction" else self.topics.feedback
            group = "selector" if "tag_selector" in event else kind
            by_kind[group].append(FileRecord(topic, 0, row.line, now_ms, None, value))
        for records in by_kind.values():
            self._decode(records, now, originals, batch)
        batch.rejects.sort()
        return batch

    def _decode(
        self,
        records: list[FileRecord],
        now: datetime,
        originals: dict[int, SourceRow],
        batch: CheckedBatch,
    ) -> None:
        if not records:
            return
        decoded = self.decoder.decode(records, now)
        dead = {d.kafka_offset for d in decoded.dead_letters}
        for letter in decoded.dead_letters:
            row = originals[letter.kafka_offset].fields
            batch.rejects.append(
                Reject(letter.kafka_offset, letter.error_field, letter.reason, row)
            )
        good = [r for r in records if r.offset not in dead]
        if self.keep_rows:
            batch.decoded.predictions.extend(decoded.predictions)
            batch.decoded.feedback.extend(decoded.feedback)
            batch.decoded.selectors.extend(decoded.selectors)
        if not self.keep_bytes:
            batch.accepted.extend(Accepted(r.offset, r.topic, b"", b"") for r in good)
            return
        if records[0].topic == self.topics.predictions:
            # One row per record, in order; the feedback list holds only embedded feedback.
            keys = [p.join_key or str(p.prediction_id) for p in decoded.predictions]
        elif decoded.selectors:  # a group of selector feedback: each keyed by its selector
            keys = [selector_text(s.selector) for s in decoded.selectors]
        else:
            keys = [
                str(f.target_prediction_id or f.target_join_key or f.target_episode_id)
                for f in decoded.feedback
            ]
        for record, key in zip(good, keys, strict=True):
            batch.accepted.append(
                Accepted(record.offset, record.topic, key.encode(), record.value or b"")
            )
