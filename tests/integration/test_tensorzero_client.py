"""TensorZero's own published client (tensorzero 2026.6.0, from PyPI), pointed at the gateway
with nothing changed but the URL: its feedback lands joined in Postgres through the worker."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from tensorzero import AsyncTensorZeroGateway, TensorZeroError

from tests.integration.gateway import bearer, new_key, running_gateway, with_gateway
from tests.integration.harness import (
    committed_to_the_end,
    count,
    live_pipeline,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker


async def _client(url: str, key: str) -> AsyncTensorZeroGateway:
    built = AsyncTensorZeroGateway.build_http(gateway_url=url, api_key=key, async_setup=True)
    assert not isinstance(built, AsyncTensorZeroGateway)
    return await built


async def test_the_tensorzero_client_sends_feedback_that_lands_joined(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        key = await new_key(database_url, "predictions", "feedback")
        settings = with_gateway(live.settings)
        async with (
            running_gateway(settings, live.registry) as url,
            httpx.AsyncClient(base_url=url, headers=bearer(key)) as http,
        ):
            episode = str(uuid.uuid4())
            ids = []
            for _ in range(2):
                answer = await http.post(
                    "/v1/predictions", json={"application": "chat", "episode_id": episode}
                )
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["prediction_id"])
            inference = ids[0]

            # A path prefix in the URL is kept by the client: "/" here is the whole gateway.
            client = await _client(url + "/", key)
            sent: dict[str, Any] = {}
            inference_level: dict[str, dict[str, Any]] = {
                "boolean": {"metric_name": "haiku_rating", "value": True},
                "float": {"metric_name": "haiku_score", "value": 4.0, "tags": {"user": "u1"}},
                "comment": {"metric_name": "comment", "value": "too long"},
                "demo-text": {"metric_name": "demonstration", "value": "a shorter haiku"},
                "demo-blocks": {
                    "metric_name": "demonstration",
                    "value": [{"type": "text", "text": "an old pond"}],
                },
                "demo-object": {"metric_name": "demonstration", "value": {"haiku": "frog"}},
            }
            for name, kwargs in inference_level.items():
                response = await client.feedback(inference_id=inference, **kwargs)
                sent[name] = response.feedback_id
            episode_level: dict[str, dict[str, Any]] = {
                "episode": {"metric_name": "task_success", "value": True},
                "episode-comment": {"metric_name": "comment", "value": "solved it"},
            }
            for name, kwargs in episode_level.items():
                response = await client.feedback(episode_id=episode, **kwargs)
                sent[name] = response.feedback_id

            dry = await client.feedback(
                metric_name="haiku_rating", value=False, inference_id=inference, dryrun=True
            )
            refusals: list[tuple[dict[str, Any], str]] = [
                (
                    {"metric_name": "haiku_rating", "value": "yes", "inference_id": inference},
                    "value",
                ),
                ({"metric_name": "haiku_rating", "value": None, "inference_id": inference}, "null"),
                ({"metric_name": "haiku_rating", "value": True}, "neither given"),
                (
                    {
                        "metric_name": "haiku_rating",
                        "value": True,
                        "inference_id": inference,
                        "episode_id": episode,
                    },
                    "both given",
                ),
                (
                    {"metric_name": "task_success", "value": True, "inference_id": inference},
                    "episode",
                ),
                (
                    {"metric_name": "no_such_metric", "value": 1, "inference_id": inference},
                    "unknown",
                ),
            ]
            for kwargs, words in refusals:
                with pytest.raises(TensorZeroError) as refused:
                    await client.feedback(**kwargs)
                assert refused.value.status_code == 400
                assert words in str(refused.value.text), refused.value.text

            unauthorised = await _client(url, "ffk_nokey_nosecret")
            with pytest.raises(TensorZeroError) as refused:
                await unauthorised.feedback(
                    metric_name="haiku_rating", value=True, inference_id=inference
                )
            assert refused.value.status_code == 401

            # Episode-level feedback joins each prediction of the episode.
            await wait_for_count(db, "SELECT count(*) FROM feedbackflow.feedback", len(sent))
            await wait_until(lambda: committed_to_the_end(live.settings), what="the worker")
    rows = {
        str(r["feedback_id"]): r
        for r in await db.fetch(
            "SELECT feedback_id, metric, status, target_kind, value_bool, value_float,"
            " value_text, value_json::text AS value_json, tags::text AS tags, prediction_id"
            " FROM feedbackflow.feedback"
        )
    }
    assert str(dry.feedback_id) not in rows
    assert set(rows) == {str(i) for i in sent.values()}
    assert all(r["status"] == "joined" for r in rows.values())

    def row(name: str) -> asyncpg.Record:
        return rows[str(sent[name])]

    assert row("boolean")["value_bool"] is True
    assert str(row("boolean")["prediction_id"]) == inference
    assert (row("float")["value_float"], row("float")["tags"]) == (4.0, '{"user": "u1"}')
    assert row("comment")["value_text"] == "too long"
    assert row("demo-text")["value_json"] == '"a shorter haiku"'
    assert row("demo-blocks")["value_json"] == '[{"text": "an old pond", "type": "text"}]'
    assert row("demo-object")["value_json"] == '{"haiku": "frog"}'
    assert (row("episode")["target_kind"], row("episode")["value_bool"]) == ("episode_id", True)
    assert row("episode-comment")["target_kind"] == "episode_id"
    joined = await count(
        db,
        "SELECT count(DISTINCT prediction_id) FROM feedbackflow.episode_feedback_predictions"
        " WHERE feedback_id = $1",
        uuid.UUID(str(sent["episode"])),
    )
    assert joined == 2
