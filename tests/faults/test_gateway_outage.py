"""The gateway with its broker away: 503 with Retry-After, never a 2xx for an event the broker
did not take; back to 202 when the broker returns; and a retried request (same Idempotency-Key)
lands once.  The broker is cut off behind a TCP proxy (tests.faults.servers)."""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx

from tests.faults.servers import broker_behind_proxy
from tests.integration.gateway import bearer, new_key, running_gateway, with_gateway
from tests.integration.harness import (
    committed_to_the_end,
    count,
    isolated_settings,
    make_topics,
    metric_registry,
    running_worker,
    wait_until,
)

# The gateway's wait for an ack: short, so that the cut is noticed quickly.
PUBLISH_TIMEOUT = 2.0
# How much longer than that an answer may take on a loaded machine.
SLACK = 5.0


async def test_with_the_broker_away_the_gateway_answers_503_and_recovers(
    database_url: str, db: asyncpg.Connection
) -> None:
    async with broker_behind_proxy() as (proxy, bootstrap):
        settings = isolated_settings(bootstrap, database_url)
        await make_topics(settings)
        settings = with_gateway(settings, publish_timeout_seconds=PUBLISH_TIMEOUT)
        key = await new_key(database_url, "feedback")
        registry = metric_registry()
        accepted: list[str] = []

        def thumbs(target: str) -> dict[str, object]:
            return {"metric": "comment", "join_key": target, "value": "kept"}

        proxy.cut()  # the gateway starts with no broker to reach
        async with (
            running_gateway(settings, registry) as url,
            httpx.AsyncClient(base_url=url, headers=bearer(key), timeout=30) as http,
        ):
            answer = await http.post("/v1/feedback", json=thumbs("before"))
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert (await http.get("/health")).status_code == 503

            proxy.restore()

            async def healthy() -> bool:
                return (await http.get("/health")).status_code == 200

            await wait_until(healthy, within=30, what="the gateway to reach the broker")
            answer = await http.post("/v1/feedback", json=thumbs("up"))
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["feedback_id"])

            proxy.cut()  # mid-life: connections drop, acks stop
            retried = {**bearer(key), "Idempotency-Key": f"retry-{uuid.uuid4()}"}
            started = time.monotonic()
            during = await http.post("/v1/feedback", json=thumbs("cut"), headers=retried)
            took = time.monotonic() - started
            assert during.status_code == 503, during.text
            assert "Retry-After" in during.headers
            assert took < PUBLISH_TIMEOUT + SLACK, took
            for _ in range(3):
                answer = await http.post("/v1/feedback", json=thumbs("cut"))
                assert answer.status_code == 503, answer.text

            proxy.restore()
            await wait_until(healthy, within=30, what="the gateway to reach the broker again")
            again = await http.post("/v1/feedback", json=thumbs("cut"), headers=retried)
            assert again.status_code == 202, again.text
            accepted.append(again.json()["feedback_id"])

        async with running_worker(settings, registry):
            await wait_until(lambda: committed_to_the_end(settings), within=60, what="the worker")
        stored = {
            str(r["feedback_id"])
            for r in await db.fetch("SELECT feedback_id FROM feedbackflow.feedback")
        }
        # Every 202 landed; the retried request, sent twice, landed once.
        assert set(accepted) <= stored
        assert (
            await count(
                db,
                "SELECT count(*) FROM feedbackflow.feedback WHERE feedback_id = $1",
                uuid.UUID(accepted[-1]),
            )
            == 1
        )
