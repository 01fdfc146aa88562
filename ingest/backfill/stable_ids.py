"""Ids for rows that carry none, derived from the row's content: the same row gets the same id
on every run, so running a backfill twice adds nothing (the sink stores an id once).

The id is a UUIDv7 at the row's own timestamp whose 74 "random" bits are SHA-256 of the row's
canonical form (RFC 8785 JSON of the wire event without its id), the scheme the decoder uses for
a prediction's embedded feedback.  Not a UUIDv5: the worker holds a UUIDv7 prediction id to its
timestamp and finds feedback's predictions near the time their id carries, which a content hash
alone cannot offer; a UUIDv7 with hashed bits is as stable as a UUIDv5 and keeps both.

A backfill row must therefore carry its timestamp: without one, the worker would stamp it with
the time it arrived, and a second run would store the row again at a new time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import rfc8785
from pydantic import TypeAdapter, ValidationError

from ingest.backfill.mapping import Kind
from ingest.metrics.registry import FieldError
from ingest.sdk.producer import uuid7
from ingest.wire.events import EPOCH_NUMBERS, Timestamp, error_text

ID_FIELDS: dict[Kind, str] = {"prediction": "prediction_id", "feedback": "feedback_id"}
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp, config=EPOCH_NUMBERS)
# The adapter's own validator, called directly: the adapter's Python wrapper cost more than the
# validation, once per row (docs/performance.md).
_validate_timestamp = _TIMESTAMP.validator.validate_python


def event_time_ms(event: Mapping[str, Any]) -> int:
    """The event's timestamp in epoch milliseconds; FieldError when missing or not a time."""
    if event.get("timestamp") is None:
        raise FieldError(
            "timestamp",
            "is required in a backfill: without it the row would be stored at the time it "
            "arrives, again on every run",
        )
    try:
        at: datetime = _validate_timestamp(event["timestamp"])
    except ValidationError as exc:
        raise FieldError("timestamp", error_text(exc.errors()[0])) from None
    return int(at.timestamp() * 1000)


def derived_id(kind: Kind, event: Mapping[str, Any]) -> UUID:
    """The row's id from its content: the same content, the same id."""
    content = {k: v for k, v in event.items() if k != ID_FIELDS[kind]}
    try:
        canonical = rfc8785.dumps(content)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FieldError("(row)", f"cannot be written as JSON: {exc}") from None
    digest = hashlib.sha256(kind.encode() + b"\0" + canonical).digest()
    return uuid7(event_time_ms(event), int.from_bytes(digest[:10], "big") >> 6)


def with_id(kind: Kind, event: dict[str, Any]) -> dict[str, Any]:
    """The event with its id: the file's own, else one derived from its content."""
    event_time_ms(event)  # every backfill row carries its time, with an id or without
    id_field = ID_FIELDS[kind]
    if event.get(id_field) is None:
        event[id_field] = str(derived_id(kind, event))
    return event
