"""feedbackflow's own routes: ``/v1/predictions``, ``/v1/feedback`` and ``/v1/batch``.

Bodies are wire format v1 (``ingest.wire``) with the ids optional: the gateway mints a UUIDv7
and the timestamp when they are missing, and answers them.  ``202``: the broker has the event;
the worker joins it within a window.  ``?dryrun=true`` checks fully and publishes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic_core import to_json

from ingest.gateway.admission import Admitted
from ingest.gateway.auth import Caller
from ingest.gateway.body import json_kind, json_object
from ingest.gateway.errors import Refusal, bad_request
from ingest.gateway.intake import Outcome, Plan, request_digest
from ingest.gateway.openapi import (
    BATCH,
    DRYRUN,
    FEEDBACK_IN,
    IDEMPOTENCY_KEY,
    PREDICTION_IN,
    TOKEN_METRICS,
    TOKEN_TTL,
    answers,
    body_of,
)
from ingest.gateway.params import flag, header, positive_int
from ingest.gateway.parts import GatewayParts
from ingest.sdk.tokens import FeedbackGrant, mint_feedback_token

JSON = "application/json"
AUTHORIZATION, IDEMPOTENCY = "authorization", "idempotency-key"


def json_response(body: Any, status: int) -> Response:
    return Response(to_json(body), status_code=status, media_type=JSON)


def add_native_routes(app: FastAPI, parts: GatewayParts) -> None:
    """On the app itself, not an included router: FastAPI matched included routes at a
    measurable cost per request (docs/performance.md, "The HTTP gateway")."""
    settings, admission, intake = parts.settings, parts.admission, parts.intake
    gatekeeper = parts.gatekeeper
    tags: list[str | Enum] = ["feedbackflow"]

    @app.post(
        "/v1/predictions",
        status_code=202,
        tags=tags,
        openapi_extra=body_of(PREDICTION_IN, IDEMPOTENCY_KEY, DRYRUN, TOKEN_METRICS, TOKEN_TTL),
        responses=answers(202, "The prediction's ids (and a feedback token, when asked)."),
        summary="Log a prediction",
    )
    async def post_prediction(request: Request) -> Response:
        caller = await gatekeeper.caller(header(request, AUTHORIZATION))
        caller.require("predictions")
        dryrun = flag(request, "dryrun")
        token_metrics = request.query_params.get("feedback_token_metrics")
        token_ttl = positive_int(request, "feedback_token_ttl")
        raw, fields = await json_object(request, settings.max_event_bytes)
        body = await intake.take_one(
            admission.prediction(fields, parts.now()),
            caller=caller.name,
            idempotency_key=header(request, IDEMPOTENCY),
            digest=request_digest("/v1/predictions", raw),
            dryrun=dryrun,
        )
        if token_metrics is not None:
            body.update(_token(parts, body["prediction_id"], token_metrics, token_ttl))
        return json_response(body, 202)

    @app.post(
        "/v1/feedback",
        status_code=202,
        tags=tags,
        openapi_extra=body_of(FEEDBACK_IN, IDEMPOTENCY_KEY, DRYRUN),
        responses=answers(202, "The feedback's id."),
        summary="Log feedback (an API key, or an end user's feedback token)",
    )
    async def post_feedback(request: Request) -> Response:
        caller = await gatekeeper.caller(header(request, AUTHORIZATION), tokens_allowed=True)
        caller.require("feedback")
        dryrun = flag(request, "dryrun")
        raw, fields = await json_object(request, settings.max_event_bytes)
        if caller.grant is not None:
            fields = within_grant(fields, caller.grant)
        body = await intake.take_one(
            admission.feedback(fields, parts.now()),
            caller=caller.name,
            idempotency_key=header(request, IDEMPOTENCY),
            digest=request_digest("/v1/feedback", raw),
            dryrun=dryrun,
        )
        return json_response(body, 202)

    @app.post(
        "/v1/batch",
        status_code=207,
        tags=tags,
        openapi_extra=body_of(BATCH, IDEMPOTENCY_KEY, DRYRUN),
        responses=answers(207, "One answer per item, in order: each its own status."),
        summary="Log many predictions and feedback; each item succeeds or fails alone",
    )
    async def post_batch(request: Request) -> Response:
        caller = await gatekeeper.caller(header(request, AUTHORIZATION))
        dryrun = flag(request, "dryrun")
        raw, body = await json_object(request, settings.max_body_bytes)
        predictions, feedback = _batch_lists(body, settings.max_batch_items)
        now = parts.now()
        items = [_item(parts, caller, "predictions", p, now) for p in predictions] + [
            _item(parts, caller, "feedback", f, now) for f in feedback
        ]
        outcomes = await intake.take(
            Plan(tuple(items)),
            caller=caller.name,
            idempotency_key=header(request, IDEMPOTENCY),
            digest=request_digest("/v1/batch", raw),
            dryrun=dryrun,
        )
        split = len(predictions)
        return json_response(
            {
                "predictions": [_item_answer(o) for o in outcomes[:split]],
                "feedback": [_item_answer(o) for o in outcomes[split:]],
            },
            207,
        )


def _token(
    parts: GatewayParts, prediction_id: str, metrics_text: str, ttl_seconds: int | None
) -> dict[str, Any]:
    secret = parts.gatekeeper.token_secret
    if secret is None:
        raise bad_request(
            "feedback_token_metrics",
            "feedback tokens are not enabled (set FEEDBACKFLOW_GATEWAY__TOKEN_SECRET)",
        )
    metrics = [m.strip() for m in metrics_text.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in parts.registry.metrics]
    if not metrics or unknown:
        raise bad_request(
            "feedback_token_metrics",
            f"unknown metric(s) {unknown}" if unknown else "name at least one metric",
        )
    ttl = min(ttl_seconds or parts.settings.token_ttl_seconds, parts.settings.token_ttl_seconds)
    now = parts.now().timestamp()
    token = mint_feedback_token(secret, prediction_id, metrics, timedelta(seconds=ttl), now=now)
    return {"feedback_token": token, "feedback_token_expires_at": int(now) + ttl}


def within_grant(fields: dict[str, Any], grant: FeedbackGrant) -> dict[str, Any]:
    """The feedback a token's holder may post: its prediction, its metrics, as an end user."""
    if fields.get("join_key") is not None or fields.get("episode_id") is not None:
        raise Refusal(403, "prediction_id", "a feedback token posts on its prediction id only")
    if str(fields.get("prediction_id")) != str(grant.prediction_id):
        raise Refusal(
            403, "prediction_id", f"this feedback token is for prediction {grant.prediction_id}"
        )
    metric = fields.get("metric")
    if metric not in grant.metrics:
        raise Refusal(
            403, "metric", f"this feedback token allows {sorted(grant.metrics)}, not {metric!r}"
        )
    source = fields.get("source")
    if source is None:
        source = {"type": "end_user"}
    elif not isinstance(source, dict) or source.get("type") != "end_user":
        raise Refusal(403, "source.type", "feedback posted with a token comes from an end_user")
    return {**fields, "source": source}


def _batch_lists(body: dict[str, Any], limit: int) -> tuple[list[Any], list[Any]]:
    unknown = sorted(set(body) - {"predictions", "feedback"})
    if unknown:
        raise bad_request(unknown[0], "unknown field; a batch has predictions and feedback")
    lists: list[list[Any]] = []
    for name in ("predictions", "feedback"):
        value = body.get(name, [])
        if not isinstance(value, list):
            raise bad_request(name, f"must be an array, got {json_kind(value)}")
        lists.append(value)
    total = len(lists[0]) + len(lists[1])
    if total > limit:
        raise Refusal(413, "(body)", f"{total} items; a batch takes at most {limit}")
    return lists[0], lists[1]


def _item(
    parts: GatewayParts, caller: Caller, kind: str, fields: Any, now: Any
) -> Admitted | Refusal:
    try:
        caller.require(kind)
        if not isinstance(fields, dict):
            raise bad_request("(item)", f"must be a JSON object, got {json_kind(fields)}")
        if kind == "predictions":
            return parts.admission.prediction(fields, now)
        return parts.admission.feedback(fields, now)
    except Refusal as refusal:
        parts.telemetry.count_refused(kind)
        return refusal


def _item_answer(outcome: Outcome) -> dict[str, Any]:
    return {"status": outcome.status, **outcome.body}
