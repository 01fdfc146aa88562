"""Taking a request's events: admit each, remember them under an Idempotency-Key, publish.

A request becomes a ``Plan``: one entry per item, either admitted (an event to publish and its
ids) or refused (why).  With an ``Idempotency-Key`` the plan is stored before anything is
published (``workers.postgres.idempotent_requests``): a retry finds it and publishes the same
bytes again instead of minting new ids, so a client's retry never becomes a second event.  Each
attempt's answer says how its own publishing went: an item the broker did not take answers 503
and is published again by the next retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ingest.gateway.admission import Admitted
from ingest.gateway.errors import Refusal
from ingest.gateway.publisher import KafkaPublisher
from ingest.gateway.telemetry import GatewayTelemetry
from workers.postgres.idempotent_requests import PublishedEvent, Remembered

# Stores a plan unless one is stored under the key; returns what is stored.
Claim = Callable[[str, str, Remembered], Awaitable[Remembered]]
MAX_IDEMPOTENCY_KEY = 255
ACCEPTED = 202


@dataclass(frozen=True)
class Outcome:
    """One item's answer: its status and body."""

    status: int
    body: dict[str, Any]
    refusal: Refusal | None = None

    def raise_refusal(self) -> None:
        if self.refusal is not None:
            raise self.refusal


@dataclass(frozen=True)
class Plan:
    items: tuple[Admitted | Refusal, ...]

    @property
    def events(self) -> tuple[PublishedEvent, ...]:
        return tuple(item.event for item in self.items if isinstance(item, Admitted))

    def remembered(self, request_sha256: bytes) -> Remembered:
        entries: list[dict[str, Any]] = []
        for item in self.items:
            if isinstance(item, Admitted):
                entries.append({"ids": item.ids})
            else:
                entries.append({"status": item.status, "field": item.field, "reason": item.reason})
        return Remembered(request_sha256, ACCEPTED, {"items": entries}, self.events)

    @classmethod
    def recalled(cls, stored: Remembered) -> Plan:
        events = iter(stored.events)
        items: list[Admitted | Refusal] = []
        for entry in stored.answer["items"]:
            if "ids" in entry:
                items.append(Admitted(next(events), entry["ids"]))
            else:
                items.append(Refusal(entry["status"], entry["field"], entry["reason"]))
        return cls(tuple(items))


def request_digest(route: str, raw: bytes, extra: str = "") -> bytes:
    return hashlib.sha256(route.encode() + b"\0" + extra.encode() + b"\0" + raw).digest()


class Intake:
    def __init__(
        self, publisher: KafkaPublisher, claim: Claim | None, telemetry: GatewayTelemetry
    ) -> None:
        self.publisher = publisher
        self.claim = claim
        self.telemetry = telemetry

    async def take(
        self,
        plan: Plan,
        *,
        caller: str,
        idempotency_key: str | None,
        digest: bytes,
        dryrun: bool = False,
    ) -> list[Outcome]:
        if dryrun:
            self.telemetry.count_events(plan.events, "dryrun")
            return [_outcome(item, None) for item in plan.items]
        if idempotency_key is not None and plan.events:
            plan = await self._claimed(plan, caller, idempotency_key, digest)
        published = await self.publisher.publish_each(plan.events)
        self.telemetry.count_published(plan.events, published)
        results = iter(published)
        return [
            _outcome(item, next(results) if isinstance(item, Admitted) else None)
            for item in plan.items
        ]

    async def take_one(
        self,
        admitted: Admitted,
        *,
        caller: str,
        idempotency_key: str | None,
        digest: bytes,
        dryrun: bool = False,
    ) -> dict[str, Any]:
        """One event's route: the answer's body once it is taken, else its refusal raised."""
        [outcome] = await self.take(
            Plan((admitted,)),
            caller=caller,
            idempotency_key=idempotency_key,
            digest=digest,
            dryrun=dryrun,
        )
        outcome.raise_refusal()
        return outcome.body

    async def _claimed(self, plan: Plan, caller: str, key: str, digest: bytes) -> Plan:
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise Refusal(400, "Idempotency-Key", f"at most {MAX_IDEMPOTENCY_KEY} characters")
        if self.claim is None:
            raise Refusal(
                400, "Idempotency-Key", "this gateway has no database to remember requests in"
            )
        try:
            stored = await self.claim(caller, key, plan.remembered(digest))
        except (OSError, ConnectionError) as exc:
            raise Refusal(
                503,
                "Idempotency-Key",
                f"cannot remember the request now: the database is unavailable ({exc})",
                retry_after=2,
            ) from None
        if stored.request_sha256 != digest:
            raise Refusal(
                422,
                "Idempotency-Key",
                "already used for a different request; use a new key for a new request",
            )
        return Plan.recalled(stored)


def _outcome(item: Admitted | Refusal, published: Refusal | None) -> Outcome:
    refusal = item if isinstance(item, Refusal) else published
    if refusal is not None:
        return Outcome(refusal.status, refusal.body(), refusal)
    assert isinstance(item, Admitted)
    return Outcome(ACCEPTED, dict(item.ids))
