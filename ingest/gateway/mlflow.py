"""MLflow 3's assessments, as ``mlflow.log_feedback`` and ``mlflow.get_assessment`` send them.

Measured from ``mlflow-tracing`` 3.17.2: ``POST /api/3.0/mlflow/traces/{trace_id}/assessments``
with ``{"assessment": {assessment_name, trace_id, source{source_type, source_id}, create_time,
last_update_time, feedback{value} | feedback{error}, rationale, metadata, span_id?}}``, wanting
exactly 200 and the assessment back with its ``assessment_id``; ``GET .../assessments/{id}``;
errors as ``{"error_code", "message"}``.  A trace is a prediction addressed by its trace id as
join key; ``span_id`` is kept in the feedback's metadata.

The client retries a POST up to eight times, so the feedback id is derived from the request:
a UUIDv7 at the assessment's ``create_time`` whose random bits are SHA-256 of the caller and
the body.  A retry is the same feedback, stored once.

Not yet: expectations, updates and overrides (revisions), deletes, assessment names that are
not configured metrics (refused with ``INVALID_PARAMETER_VALUE``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ingest.gateway.body import json_object
from ingest.gateway.errors import Refusal, from_validation
from ingest.gateway.intake import request_digest
from ingest.gateway.native import AUTHORIZATION, json_response
from ingest.gateway.openapi import answers
from ingest.gateway.params import header
from ingest.gateway.parts import GatewayParts
from ingest.sdk.producer import uuid7

PREFIX = "/api/3.0/mlflow/traces/{trace_id}/assessments"
_SOURCES = {"HUMAN": "human", "LLM_JUDGE": "llm_judge", "CODE": "code"}
_THEIR_SOURCES = {ours: theirs for theirs, ours in _SOURCES.items()}
_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "INVALID_PARAMETER_VALUE",
    415: "INVALID_PARAMETER_VALUE",
    503: "TEMPORARILY_UNAVAILABLE",
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AssessmentSource(_Lenient):
    source_type: str = "HUMAN"
    source_id: str | None = None


class AssessmentError(_Lenient):
    error_code: str = "ERROR"
    error_message: str | None = None


class FeedbackValue(_Lenient):
    value: JsonValue = None
    error: AssessmentError | None = None


class Assessment(_Lenient):
    assessment_name: str = Field(min_length=1)
    trace_id: str | None = None
    source: AssessmentSource = AssessmentSource()
    create_time: AwareDatetime | None = None
    feedback: FeedbackValue | None = None
    rationale: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    span_id: str | None = None


class CreateAssessment(_Lenient):
    assessment: Assessment


def mlflow_error(refusal: Refusal) -> Response:
    body = {"error_code": _CODES.get(refusal.status, "INTERNAL_ERROR"), "message": str(refusal)}
    response = json_response(body, refusal.status)
    response.headers.update(refusal.headers())
    return response


def feedback_id_of(caller: str, raw: bytes, at: datetime) -> UUID:
    bits = int.from_bytes(hashlib.sha256(caller.encode() + b"\0" + raw).digest()[:10], "big")
    return uuid7(int(at.timestamp() * 1000), bits >> 6)


def as_feedback(
    trace_id: str, body: Assessment, feedback_id: UUID, now: datetime
) -> dict[str, Any]:
    if body.feedback is None:
        raise Refusal(400, "assessment.feedback", "only feedback assessments are taken yet")
    source_type = _SOURCES.get(body.source.source_type.upper())
    if source_type is None:
        known = ", ".join(_SOURCES)
        raise Refusal(400, "assessment.source.source_type", f"one of {known}")
    metadata = dict(body.metadata)
    if body.span_id:
        metadata["mlflow.span_id"] = body.span_id
    fields: dict[str, Any] = {
        "feedback_id": str(feedback_id),
        "metric": body.assessment_name,
        "join_key": trace_id,
        "source": {"type": source_type, "id": body.source.source_id},
        "timestamp": (body.create_time or now).isoformat(),
        "metadata": metadata,
    }
    if body.feedback.error is not None:
        error = body.feedback.error
        fields["error"] = {"code": error.error_code, "message": error.error_message or ""}
    else:
        fields["value"] = body.feedback.value
    if body.rationale is not None:
        fields["rationale"] = body.rationale
    return fields


def _stored_assessment(row: Mapping[str, Any]) -> dict[str, Any]:
    metadata = dict(row["metadata"])
    span_id = metadata.pop("mlflow.span_id", None)
    value = next(
        (row[c] for c in ("value_bool", "value_float", "value_text") if row[c] is not None),
        row["value_json"],
    )
    feedback: dict[str, Any] = {"value": value}
    if row["error_code"] is not None:
        feedback = {
            "error": {"error_code": row["error_code"], "error_message": row["error_message"]}
        }
    time = row["ts"].isoformat().replace("+00:00", "Z")
    assessment = {
        "assessment_id": str(row["feedback_id"]),
        "assessment_name": row["metric"],
        "trace_id": row["target_join_key"],
        "source": {
            "source_type": _THEIR_SOURCES.get(row["source_type"], "HUMAN"),
            "source_id": row["source_id"],
        },
        "create_time": time,
        "last_update_time": time,
        "feedback": feedback,
        "metadata": metadata,
        "valid": True,
    }
    if row["rationale"] is not None:
        assessment["rationale"] = row["rationale"]
    if span_id is not None:
        assessment["span_id"] = span_id
    return assessment


def add_mlflow_routes(app: FastAPI, parts: GatewayParts) -> None:
    tags: list[str | Enum] = ["MLflow"]

    @app.post(
        PREFIX,
        tags=tags,
        summary="MLflow's create assessment (feedback)",
        responses=answers(200, "The assessment, with its assessment_id."),
    )
    async def create_assessment(trace_id: str, request: Request) -> Response:
        try:
            caller = await parts.gatekeeper.caller(header(request, AUTHORIZATION))
            caller.require("feedback")
            raw, fields = await json_object(request, parts.settings.max_event_bytes)
            try:
                body = CreateAssessment.model_validate(fields).assessment
            except ValidationError as exc:
                raise from_validation(exc) from None
            now = parts.now()
            feedback_id = feedback_id_of(caller.name, raw, body.create_time or now)
            event = as_feedback(trace_id, body, feedback_id, now)
            await parts.intake.take_one(
                parts.admission.feedback(event, now),
                caller=caller.name,
                idempotency_key=None,
                digest=request_digest(PREFIX, raw),
            )
        except Refusal as refusal:
            return mlflow_error(refusal)
        answer = {**fields["assessment"], "trace_id": trace_id, "assessment_id": str(feedback_id)}
        return json_response({"assessment": answer}, 200)

    @app.get(
        PREFIX + "/{assessment_id}",
        tags=tags,
        summary="MLflow's get assessment",
        responses=answers(200, "The assessment."),
    )
    async def get_assessment(trace_id: str, assessment_id: str, request: Request) -> Response:
        try:
            caller = await parts.gatekeeper.caller(header(request, AUTHORIZATION))
            caller.require("feedback")
            row = await parts.read_feedback(assessment_id) if parts.read_feedback else None
            if row is None or row["target_join_key"] != trace_id:
                raise Refusal(
                    404, "assessment_id", f"no assessment {assessment_id!r} on trace {trace_id!r}"
                )
        except Refusal as refusal:
            return mlflow_error(refusal)
        return json_response({"assessment": _stored_assessment(row)}, 200)
