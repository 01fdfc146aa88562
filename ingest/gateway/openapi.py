"""The gateway's OpenAPI document: request bodies from the wire models, errors' shape.

Routes read their bodies themselves (``ingest.gateway.body``: limits, jiter, the worker's own
checks), so FastAPI cannot infer them; each route names its body here, and the schemas are the
wire format's with the ids the gateway mints made optional.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from ingest.wire.events import Feedback, Prediction

REF = "#/components/schemas/{model}"
PREDICTION_IN, FEEDBACK_IN, BATCH, TENSORZERO_FEEDBACK = (
    "PredictionIn",
    "FeedbackIn",
    "Batch",
    "TensorZeroFeedback",
)
ERROR = "Error"


def _optional_id(model: type[BaseModel], id_field: str) -> dict[str, Any]:
    schema = copy.deepcopy(model.model_json_schema(ref_template=REF))
    schema.pop("$id", None)
    schema["required"] = [f for f in schema.get("required", []) if f != id_field]
    schema["properties"][id_field]["description"] = "Minted by the gateway (UUIDv7) when absent."
    return schema


def _schemas(extra: dict[str, type[BaseModel]]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, schema in (
        (PREDICTION_IN, _optional_id(Prediction, "prediction_id")),
        (FEEDBACK_IN, _optional_id(Feedback, "feedback_id")),
    ):
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    for name, model in extra.items():
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas[BATCH] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "predictions": {"type": "array", "items": {"$ref": REF.format(model=PREDICTION_IN)}},
            "feedback": {"type": "array", "items": {"$ref": REF.format(model=FEEDBACK_IN)}},
        },
    }
    schemas[ERROR] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "<field>: <reason>"},
            "field": {"type": "string"},
        },
    }
    return schemas


def _parameter(where: str, name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": False,
        "schema": schema,
        "description": description,
    }


IDEMPOTENCY_KEY = _parameter(
    "header",
    "Idempotency-Key",
    {"type": "string", "maxLength": 255},
    "A retry with the same key gets the same answer and ids, and no second event.",
)
DRYRUN = _parameter("query", "dryrun", {"type": "boolean"}, "Check fully; publish nothing.")
TOKEN_METRICS = _parameter(
    "query",
    "feedback_token_metrics",
    {"type": "string"},
    "Comma-separated metrics: answer an end-user feedback token for them.",
)
TOKEN_TTL = _parameter(
    "query", "feedback_token_ttl", {"type": "integer", "minimum": 1}, "Seconds the token lasts."
)


def body_of(schema: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` naming a route's JSON body and the parameters it reads itself."""
    return {
        "parameters": list(parameters),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}},
        },
    }


_ERRORS = {
    400: "Invalid: the field and the reason.",
    401: "No credential, or one that is not valid.",
    403: "The credential does not allow this.",
    404: "No such thing (an assessment, a route).",
    413: "The body or an event is too large.",
    415: "Not application/json.",
    422: "The Idempotency-Key was used for a different request.",
    503: "The broker (or the database) cannot take it now; see Retry-After.",
}


def answers(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    error = {"application/json": {"schema": {"$ref": REF.format(model=ERROR)}}}
    documented: dict[int | str, dict[str, Any]] = {status: {"description": description}}
    documented.update({code: {"description": d, "content": error} for code, d in _ERRORS.items()})
    return documented


def install(app: FastAPI, extra: dict[str, type[BaseModel]]) -> None:
    """Make ``app.openapi()`` include the bodies' schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(_schemas(extra))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
