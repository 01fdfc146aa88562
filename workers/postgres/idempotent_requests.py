"""Requests sent with an ``Idempotency-Key``: the first answer, and the events it published.

Clients retry (TensorZero's and MLflow's do on their own), and a retry must not become a second
feedback.  The first request to claim a (caller, key) stores the events it admitted, with their
minted ids and timestamps, before they are published; every later request with that key gets
those events published again, byte for byte, and the same answer.  The worker stores an event id
once, so the copies land as one row, whichever of the attempts reached the broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg


@dataclass(frozen=True)
class PublishedEvent:
    topic: str
    key: str
    value: bytes


@dataclass(frozen=True)
class Remembered:
    """What the first request with a key was answered, and the bytes it published."""

    request_sha256: bytes
    status: int
    answer: dict[str, Any]
    events: tuple[PublishedEvent, ...]


def _events_json(events: tuple[PublishedEvent, ...]) -> str:
    return json.dumps([{"topic": e.topic, "key": e.key, "value": e.value.decode()} for e in events])


def _remembered(row: asyncpg.Record) -> Remembered:
    events = tuple(
        PublishedEvent(e["topic"], e["key"], e["value"].encode()) for e in json.loads(row["events"])
    )
    return Remembered(
        bytes(row["request_sha256"]), row["status"], json.loads(row["answer"]), events
    )


async def claim(
    pool: asyncpg.Pool, caller: str, idempotency_key: str, first: Remembered
) -> Remembered:
    """Store ``first`` under the key unless a request stored something there before; return
    what is stored (``first``, or the earlier request's)."""
    row = await pool.fetchrow(
        """
        WITH inserted AS (
            INSERT INTO feedbackflow.idempotent_requests
                (caller, idempotency_key, request_sha256, status, answer, events)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)
            ON CONFLICT (caller, idempotency_key) DO NOTHING
            RETURNING request_sha256, status, answer::text, events::text
        )
        SELECT * FROM inserted
        UNION ALL
        SELECT request_sha256, status, answer::text, events::text
          FROM feedbackflow.idempotent_requests
         WHERE caller = $1 AND idempotency_key = $2 AND NOT EXISTS (SELECT 1 FROM inserted)
        """,
        caller,
        idempotency_key,
        first.request_sha256,
        first.status,
        json.dumps(first.answer),
        _events_json(first.events),
    )
    if row is None:
        # A concurrent request with the same key inserted first and committed while this
        # statement waited on it: its row is newer than this statement's snapshot.
        row = await pool.fetchrow(
            "SELECT request_sha256, status, answer::text, events::text"
            " FROM feedbackflow.idempotent_requests WHERE caller = $1 AND idempotency_key = $2",
            caller,
            idempotency_key,
        )
    return first if row is None else _remembered(row)


async def forget_older_than(pool: asyncpg.Pool, age: timedelta) -> int:
    status = await pool.execute(
        "DELETE FROM feedbackflow.idempotent_requests WHERE created_at < now() - $1::interval",
        age,
    )
    return int(status.split()[-1])
