"""TensorZero's ``POST /feedback``, unchanged: point a TensorZero client at the gateway.

Measured from the published client (tensorzero 2026.6.0): it sends exactly
``{"episode_id", "inference_id", "metric_name", "value", "internal", "tags", "dryrun"}`` with
``Authorization: Bearer <api_key>`` when it has a key, checks nothing itself, and needs a 2xx
with ``{"feedback_id"}``; any other status becomes a ``TensorZeroError`` carrying the body.
So this route checks what the client does not (both ids, neither, a null value) and names the
fields in TensorZero's words: ``inference_id`` is feedbackflow's ``prediction_id``.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any
from uuid import UUID

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, ValidationError

from ingest.gateway.body import json_object
from ingest.gateway.errors import Refusal, bad_request, from_validation
from ingest.gateway.intake import request_digest
from ingest.gateway.native import AUTHORIZATION, IDEMPOTENCY, json_response
from ingest.gateway.openapi import IDEMPOTENCY_KEY, TENSORZERO_FEEDBACK, answers, body_of
from ingest.gateway.params import header
from ingest.gateway.parts import GatewayParts
from ingest.wire.events import MAX_NAME, MAX_TAG_VALUE

TagText = Annotated[str, Field(max_length=MAX_TAG_VALUE)]


class TensorZeroFeedback(BaseModel):
    """The body TensorZero's client sends to ``/feedback``."""

    model_config = ConfigDict(extra="forbid")

    metric_name: str = Field(min_length=1, max_length=MAX_NAME)
    value: JsonValue = None
    inference_id: UUID | None = None
    episode_id: UUID | None = None
    dryrun: StrictBool | None = None
    internal: StrictBool | None = None
    tags: dict[Annotated[str, Field(min_length=1, max_length=MAX_NAME)], TagText] | None = None


# feedbackflow's words in a refusal, and TensorZero's for the same thing.
_THEIR_WORDS = {"prediction_id": "inference_id", "metric": "metric_name"}
_OUR_WORDS = re.compile(r"\bprediction_id\b")


def in_their_words(refusal: Refusal) -> Refusal:
    field = _THEIR_WORDS.get(refusal.field, refusal.field)
    reason = _OUR_WORDS.sub("inference_id", refusal.reason).replace(" or join_key", "")
    return Refusal(refusal.status, field, reason, retry_after=refusal.retry_after)


def as_feedback(body: TensorZeroFeedback) -> dict[str, Any]:
    if (body.inference_id is None) == (body.episode_id is None):
        given = "both" if body.inference_id is not None else "neither"
        raise bad_request(
            "inference_id",
            f"exactly one of inference_id and episode_id is required ({given} given)",
        )
    if body.value is None:
        raise bad_request("value", "required, got null")
    fields: dict[str, Any] = {"metric": body.metric_name, "value": body.value}
    if body.inference_id is not None:
        fields["prediction_id"] = str(body.inference_id)
    else:
        fields["episode_id"] = str(body.episode_id)
    if body.tags:
        fields["tags"] = body.tags
    if body.internal:
        fields["metadata"] = {"tensorzero_internal": "true"}
    return fields


def add_tensorzero_routes(app: FastAPI, parts: GatewayParts) -> None:
    tags: list[str | Enum] = ["TensorZero"]

    @app.post(
        "/feedback",
        tags=tags,
        openapi_extra=body_of(TENSORZERO_FEEDBACK, IDEMPOTENCY_KEY),
        responses=answers(200, 'The feedback\'s id: {"feedback_id": "<uuid>"}.'),
        summary="TensorZero's /feedback (inference_id is the prediction id)",
    )
    async def tensorzero_feedback(request: Request) -> Response:
        try:
            caller = await parts.gatekeeper.caller(header(request, AUTHORIZATION))
            caller.require("feedback")
            raw, fields = await json_object(request, parts.settings.max_event_bytes)
            try:
                body = TensorZeroFeedback.model_validate(fields)
            except ValidationError as exc:
                raise from_validation(exc) from None
            answer = await parts.intake.take_one(
                parts.admission.feedback(as_feedback(body), parts.now()),
                caller=caller.name,
                idempotency_key=header(request, IDEMPOTENCY),
                digest=request_digest("/feedback", raw),
                dryrun=bool(body.dryrun),
            )
        except Refusal as refusal:
            raise in_their_words(refusal) from None
        return json_response(answer, 200)
