"""The HTTP gateway over real HTTP, with the real broker, worker and Postgres: what it takes
lands joined, what it refuses never reaches Kafka, and who may write is enforced."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx

from ingest.sdk.tokens import mint_feedback_token
from tests.conftest import PostgresServer
from tests.integration.gateway import TOKEN_SECRET, bearer, new_key, running_gateway, with_gateway
from tests.integration.harness import (
    LivePipeline,
    committed_to_the_end,
    count,
    isolated_settings,
    live_pipeline,
    metric_registry,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker, create_database

ORIGIN = "https://app.example.com"


@dataclass
class Gateway:
    live: LivePipeline
    http: httpx.AsyncClient
    key: str


@asynccontextmanager
async def gateway(kafka: TansuBroker, database_url: str, **settings: Any) -> AsyncIterator[Gateway]:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        configured = with_gateway(live.settings, cors_origins=[ORIGIN], **settings)
        key = await new_key(database_url, "predictions", "feedback")
        async with (
            running_gateway(configured, live.registry) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            yield Gateway(live, http, key)


async def everything_written(live: LivePipeline) -> None:
    await wait_until(lambda: committed_to_the_end(live.settings), what="the worker to catch up")


async def test_predictions_and_feedback_posted_over_http_are_joined_in_postgres(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with gateway(kafka, database_url) as gw:
        answer = await gw.http.post(
            "/v1/predictions",
            json={"application": "generate_haiku", "model": "gpt-a", "join_key": "req-1"},
            headers=bearer(gw.key),
        )
        assert answer.status_code == 202, answer.text
        prediction_id = answer.json()["prediction_id"]
        assert answer.json()["join_key"] == "req-1"
        assert uuid.UUID(prediction_id).version == 7
        for body in (
            {"metric": "haiku_rating", "prediction_id": prediction_id, "value": True},
            {"metric": "haiku_score", "join_key": "req-1", "value": 4.5, "rationale": "vivid"},
            {"metric": "comment", "prediction_id": prediction_id, "value": "lovely"},
        ):
            answer = await gw.http.post("/v1/feedback", json=body, headers=bearer(gw.key))
            assert answer.status_code == 202, answer.text
            assert uuid.UUID(answer.json()["feedback_id"]).version == 7
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 3
        )
    rows = await db.fetch(
        "SELECT metric, value_bool, value_float, value_text, rationale, model"
        " FROM feedbackflow.feedback WHERE prediction_id = $1 ORDER BY metric",
        uuid.UUID(prediction_id),
    )
    assert [tuple(r) for r in rows] == [
        ("comment", None, None, "lovely", None, "gpt-a"),
        ("haiku_rating", True, None, None, None, "gpt-a"),
        ("haiku_score", None, 4.5, None, "vivid", "gpt-a"),
    ]


async def test_a_batch_answers_each_item_and_a_bad_item_fails_alone(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with gateway(kafka, database_url) as gw:
        batch = {
            "predictions": [
                {"application": "a", "join_key": "b-1"},
                {"application": "a", "join_key": "b-2", "colour": "red"},
                {"application": "a", "join_key": "b-3"},
            ],
            "feedback": [
                {"metric": "haiku_rating", "join_key": "b-1", "value": True},
                {"metric": "haiku_rating", "join_key": "b-3", "value": "yes"},
                "not an object",
                {"metric": "haiku_rating", "join_key": "b-3", "value": False},
            ],
        }
        answer = await gw.http.post("/v1/batch", json=batch, headers=bearer(gw.key))
        assert answer.status_code == 207, answer.text
        body = answer.json()
        assert [i["status"] for i in body["predictions"]] == [202, 400, 202]
        assert [i["status"] for i in body["feedback"]] == [202, 400, 400, 202]
        assert body["predictions"][1]["field"] == "colour"
        assert body["feedback"][1]["field"] == "value"
        assert "boolean" in body["feedback"][1]["error"]
        assert body["predictions"][0]["join_key"] == "b-1"
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 2
        )
        await everything_written(gw.live)
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 2
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 2
    # What the gateway refused never reached Kafka, so the worker dead-lettered nothing.
    assert await count(db, "SELECT count(*) FROM feedbackflow.dead_letters") == 0


async def test_a_batch_larger_than_the_limit_is_refused_whole(
    kafka: TansuBroker, database_url: str
) -> None:
    async with gateway(kafka, database_url, max_batch_items=3) as gw:
        items = [{"application": "a"}] * 4
        answer = await gw.http.post(
            "/v1/batch", json={"predictions": items}, headers=bearer(gw.key)
        )
    assert answer.status_code == 413
    assert answer.json()["error"] == "(body): 4 items; a batch takes at most 3"


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEEDBACKFLOW_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_keys_are_made_listed_and_revoked_by_the_cli_and_enforced_by_the_gateway(
    kafka: TansuBroker, database_url: str
) -> None:
    made = _cli(database_url, "create", "--name", "labelling-tool", "--scopes", "feedback")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("ffk_")
    assert "only time the key is shown" in made.stderr
    async with gateway(kafka, database_url, key_cache_seconds=1.0) as gw:
        listed = _cli(database_url, "list")
        assert "labelling-tool\tfeedback\t" in listed.stdout
        assert key not in listed.stdout  # the secret is never shown again
        prediction = {"application": "a"}
        feedback = {"metric": "comment", "join_key": "k", "value": "hi"}
        cases = [
            ("/v1/feedback", feedback, {}, 401, "Authorization: missing"),
            ("/v1/feedback", feedback, bearer(key + "x"), 401, "unknown API key"),
            ("/v1/feedback", feedback, bearer("nonsense"), 401, "not an API key"),
            ("/v1/predictions", prediction, bearer(key), 403, "lacks the scope 'predictions'"),
            ("/v1/feedback", feedback, {"Authorization": key}, 401, "Bearer scheme"),
        ]
        for path, body, headers, status, words in cases:
            answer = await gw.http.post(path, json=body, headers=headers)
            assert (answer.status_code, words in answer.json()["error"]) == (status, True), (
                path,
                headers,
                answer.text,
            )
        ok = await gw.http.post("/v1/feedback", json=feedback, headers=bearer(key))
        assert ok.status_code == 202, ok.text

        revoked = _cli(database_url, "revoke", key)
        assert revoked.returncode == 0, revoked.stderr
        revoked_at = time.monotonic()

        async def refused() -> bool:
            answer = await gw.http.post("/v1/feedback", json=feedback, headers=bearer(key))
            return answer.status_code == 401 and "was revoked" in answer.json()["error"]

        await wait_until(refused, within=10, what="the revoked key to be refused")
        assert time.monotonic() - revoked_at < 10
        assert _cli(database_url, "revoke", key).returncode == 1  # revoked already


async def test_an_end_user_token_posts_only_its_prediction_and_metrics(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with gateway(kafka, database_url) as gw:
        answer = await gw.http.post(
            "/v1/predictions",
            params={"feedback_token_metrics": "haiku_rating,comment"},
            json={"application": "generate_haiku"},
            headers=bearer(gw.key),
        )
        assert answer.status_code == 202, answer.text
        prediction_id, token = answer.json()["prediction_id"], answer.json()["feedback_token"]
        other = (
            await gw.http.post("/v1/predictions", json={"application": "a"}, headers=bearer(gw.key))
        ).json()["prediction_id"]

        # The browser's preflight, then its post with only the token.
        preflight = await gw.http.options(
            "/v1/feedback",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        thumbs = {"metric": "haiku_rating", "prediction_id": prediction_id, "value": True}
        answer = await gw.http.post(
            "/v1/feedback", json=thumbs, headers={**bearer(token), "Origin": ORIGIN}
        )
        assert answer.status_code == 202, answer.text
        assert answer.headers["access-control-allow-origin"] == ORIGIN

        expired = mint_feedback_token(
            TOKEN_SECRET, prediction_id, ["haiku_rating"], timedelta(seconds=60), now=0
        )
        foreign = mint_feedback_token("x" * 40, prediction_id, ["haiku_rating"])
        header, payload, signature = token.split(".")
        tampered = f"{header}.{payload}.{signature[:-2]}AA"
        refusals = [
            ({**thumbs, "prediction_id": other}, token, 403, f"is for prediction {prediction_id}"),
            ({**thumbs, "metric": "haiku_score", "value": 5}, token, 403, "allows"),
            ({**thumbs, "source": {"type": "human", "id": "me"}}, token, 403, "end_user"),
            ({"metric": "comment", "join_key": "k", "value": "x"}, token, 403, "prediction id"),
            (thumbs, expired, 401, "expired"),
            (thumbs, foreign, 401, "signature"),
            (thumbs, tampered, 401, "signature"),
        ]
        for body, credential, status, words in refusals:
            answer = await gw.http.post("/v1/feedback", json=body, headers=bearer(credential))
            assert answer.status_code == status, (body, answer.text)
            assert words in answer.json()["error"], answer.text
        answer = await gw.http.post(
            "/v1/predictions", json={"application": "a"}, headers=bearer(token)
        )
        assert answer.status_code == 401
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
    row = await db.fetchrow("SELECT source_type, prediction_id FROM feedbackflow.feedback")
    assert row is not None
    assert (row["source_type"], str(row["prediction_id"])) == ("end_user", prediction_id)


async def test_a_retry_with_an_idempotency_key_gets_the_same_id_and_stores_one_event(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with gateway(kafka, database_url) as gw:
        headers = {**bearer(gw.key), "Idempotency-Key": "thumbs-1"}
        body = {"metric": "comment", "join_key": "idem", "value": "first"}
        first = await gw.http.post("/v1/feedback", json=body, headers=headers)
        again = await gw.http.post("/v1/feedback", json=body, headers=headers)
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        changed = await gw.http.post(
            "/v1/feedback", json={**body, "value": "second"}, headers=headers
        )
        assert changed.status_code == 422
        assert changed.json()["field"] == "Idempotency-Key"
        # Without a key, the same body is a second feedback.
        other = await gw.http.post("/v1/feedback", json=body, headers=bearer(gw.key))
        assert other.json()["feedback_id"] != first.json()["feedback_id"]
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.feedback", 2)
        await everything_written(gw.live)
    ids = {
        r["feedback_id"] for r in await db.fetch("SELECT feedback_id FROM feedbackflow.feedback")
    }
    assert ids == {uuid.UUID(first.json()["feedback_id"]), uuid.UUID(other.json()["feedback_id"])}


async def test_dryrun_checks_fully_and_publishes_nothing(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with gateway(kafka, database_url) as gw:
        dry = {"dryrun": "true"}
        good = {"metric": "comment", "join_key": "dry", "value": "x"}
        answer = await gw.http.post("/v1/feedback", json=good, params=dry, headers=bearer(gw.key))
        assert answer.status_code == 202
        bad = await gw.http.post(
            "/v1/feedback", json={**good, "value": 1}, params=dry, headers=bearer(gw.key)
        )
        assert bad.status_code == 400
        batch = await gw.http.post(
            "/v1/batch",
            json={"predictions": [{"application": "a"}], "feedback": [good]},
            params=dry,
            headers=bearer(gw.key),
        )
        assert [i["status"] for i in batch.json()["predictions"]] == [202]
        real = await gw.http.post("/v1/feedback", json=good, headers=bearer(gw.key))
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.feedback", 1)
        await everything_written(gw.live)
    assert await count(db, "SELECT count(*) FROM feedbackflow.predictions") == 0
    stored = await db.fetchval("SELECT feedback_id FROM feedbackflow.feedback")
    assert str(stored) == real.json()["feedback_id"]


async def test_malformed_and_oversized_bodies_are_refused_and_the_gateway_stays_up(
    kafka: TansuBroker, database_url: str
) -> None:
    async with gateway(kafka, database_url, max_event_bytes=2_000, max_body_bytes=10_000) as gw:
        json_type = {**bearer(gw.key), "Content-Type": "application/json"}

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 1_000

        cases: list[tuple[str, dict[str, str], Any, int, str]] = [
            ("/v1/feedback", json_type, b"x" * 3_000, 413, "(body)"),
            ("/v1/batch", json_type, chunks(), 413, "(body)"),
            ("/v1/feedback", {**bearer(gw.key)}, b"{}", 415, "Content-Type"),
            ("/v1/feedback", json_type, b'{"metric": "\xff"}', 400, "(body)"),
            ("/v1/feedback", json_type, b"[" * 1_000, 400, "(body)"),
            ("/v1/feedback", json_type, b'{"metric": "a", "metric": "b"}', 400, "metric"),
            ("/v1/feedback", json_type, b"[1, 2]", 400, "(body)"),
            ("/v1/feedback", json_type, b"", 400, "(body)"),
            ("/v1/feedback", json_type, b'{"value": NaN}', 400, "(body)"),
            (
                "/feedback",
                json_type,
                b'{"metric_name": "comment", "value": 1e999,'
                b' "episode_id": "0193a0c2-7c1e-7b1a-9f00-6d2b1c3e4f50"}',
                400,
                "value",
            ),
        ]
        for path, headers, content, status, field in cases:
            answer = await gw.http.post(path, content=content, headers=headers)
            assert (answer.status_code, answer.json()["field"]) == (status, field), answer.text
        big = {"metric": "comment", "join_key": "k", "value": "x" * 3_000}
        answer = await gw.http.post("/v1/feedback", json=big, headers=bearer(gw.key))
        assert answer.status_code == 413
        health = await gw.http.get("/health")
        assert health.json() == {"status": "ok", "broker": "reachable"}
        metrics = (await gw.http.get("/metrics")).text
        assert 'feedbackflow_gateway_requests_total{route="/v1/feedback",status="413"}' in metrics


async def test_a_database_without_the_gateway_tables_is_a_503_that_says_to_migrate(
    kafka: TansuBroker, postgres: PostgresServer
) -> None:
    bare = await create_database(
        postgres.admin_url, f"ff_{os.getpid()}_bare_{uuid.uuid4().hex[:6]}"
    )
    settings = with_gateway(isolated_settings(kafka.bootstrap, bare))
    async with (
        running_gateway(settings, metric_registry()) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        answer = await http.post(
            "/v1/feedback",
            json={"metric": "comment", "join_key": "k", "value": "x"},
            headers=bearer("ffk_abc_secret"),
        )
    assert answer.status_code == 503
    assert "run `feedbackflow migrate`" in answer.json()["error"]
