"""Feedback logged with its prediction (Gantry's ``log_completion(..., feedback=...)``): stored
as ordinary feedback joined to that prediction, once however often the prediction is sent."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from tests.integration.gateway import bearer, new_key, running_gateway, with_gateway
from tests.integration.harness import (
    committed_to_the_end,
    count,
    live_pipeline,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker

JOINED = "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'"


async def test_a_predictions_feedback_is_joined_to_it_once_from_the_sdk_and_the_gateway(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        sent = await live.ff.log_prediction(
            application="generate_haiku",
            model="gpt-a",
            feedback={"haiku_rating": True, "haiku_score": 4.0},
        )
        # The same bytes again, as a producer's retry would send them.
        await live.ff.send_raw(
            live.topics.predictions, sent.effective_join_key, sent.model_dump_json().encode()
        )
        await live.ff.flush()
        key = await new_key(database_url, "predictions")
        async with (
            running_gateway(with_gateway(live.settings), live.registry) as url,
            httpx.AsyncClient(base_url=url, headers=bearer(key)) as http,
        ):
            answer = await http.post(
                "/v1/predictions",
                json={"application": "generate_haiku", "feedback": {"comment": "first try"}},
            )
            assert answer.status_code == 202, answer.text
            refused = await http.post(
                "/v1/predictions", json={"application": "a", "feedback": {"haiku_rating": 1}}
            )
            assert refused.status_code == 400
            assert refused.json()["field"] == "feedback.haiku_rating"
        await wait_for_count(db, JOINED, 3)
        await wait_until(lambda: committed_to_the_end(live.settings), what="the worker")
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 3
    rows = await db.fetch(
        "SELECT metric, prediction_id, value_bool, value_float, value_text, model, ts"
        " FROM feedbackflow.feedback ORDER BY metric"
    )
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["haiku_rating"]["prediction_id"] == sent.prediction_id
    assert (by_metric["haiku_rating"]["value_bool"], by_metric["haiku_rating"]["model"]) == (
        True,
        "gpt-a",
    )
    assert by_metric["haiku_score"]["value_float"] == 4.0
    assert by_metric["haiku_rating"]["ts"] == sent.timestamp
    gateway_prediction = uuid.UUID(answer.json()["prediction_id"])
    assert by_metric["comment"]["prediction_id"] == gateway_prediction
    assert (
        str(
            await db.fetchval(
                "SELECT feedback_id FROM feedbackflow.feedback WHERE metric = 'comment'"
            )
        )
        == answer.json()["feedback_ids"]["comment"]
    )
