"""log10's feedback routes, as ``log10-io`` 0.16.1 calls them (measured from its client).

The client reads ``LOG10_URL``, ``LOG10_TOKEN`` and ``LOG10_ORG_ID`` and sends the token as
``x-log10-token`` (here: a feedbackflow API key with the ``feedback`` scope) and the
organization as ``x-log10-organization-id`` and ``organization_id``.

- ``POST /api/v1/feedback_task`` ``{name, json_schema, instruction, completion_tags_selector}``:
  a task is a metric defined at run time, of type ``json`` with the task's schema and its
  instruction as description; answered ``{"id": <task id>, ...}``.  The same task again is the
  same task; another definition under a taken name is a 409.
- ``GET /api/v1/feedback_task`` (``offset``, ``limit``) and ``GET .../{id}``.
- ``POST /api/v1/feedback`` ``{task_id, json_values, completion_tags_selector, comment}``: a
  feedback on the task's metric aimed at every prediction carrying the selector's tags (wire
  ``tag_selector``: ``key=value`` or ``key``), ``comment`` as its rationale; published, answered
  after the broker's ack, and resolved by the worker into one feedback per matched prediction.
- ``GET /api/v1/feedback`` (``offset``, ``limit``, ``task_id``) and ``GET .../{id}``: what was
  sent, with ``matched_completion_ids`` (the matched predictions' ids) once resolved, and an
  exact ``total`` (the client pages until it has read that many).

Errors are ``{"error": "<field>: <reason>"}``, as the client prints them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ingest.gateway.auth import Caller
from ingest.gateway.body import json_object
from ingest.gateway.errors import Refusal, bad_request, from_validation
from ingest.gateway.intake import request_digest
from ingest.gateway.native import json_response
from ingest.gateway.openapi import answers
from ingest.gateway.params import header
from ingest.gateway.parts import GatewayParts, GatewayStore
from ingest.metrics.registry import ConfigError
from ingest.sdk.producer import uuid7
from workers.postgres import log10_store
from workers.postgres.metric_definitions import DefinitionConflict

TASKS, FEEDBACK = "/api/v1/feedback_task", "/api/v1/feedback"
TOKEN, ORGANIZATION = "x-log10-token", "x-log10-organization-id"
MAX_PAGE = 1000


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TaskIn(_Lenient):
    name: str = Field(min_length=1)
    json_schema: dict[str, JsonValue]
    instruction: str | None = None
    completion_tags_selector: list[str] | None = None
    organization_id: str | None = None


class FeedbackIn(_Lenient):
    task_id: UUID
    json_values: JsonValue
    completion_tags_selector: list[str]
    comment: str | None = None
    organization_id: str | None = None


def log10_error(refusal: Refusal) -> Response:
    response = json_response({"error": str(refusal)}, refusal.status)
    response.headers.update(refusal.headers())
    return response


async def _stored(store: GatewayStore, call: Callable[[Any], Awaitable[Any]]) -> Any:
    try:
        return await store.run(call)
    except ConnectionError as exc:
        raise Refusal(503, "(database)", str(exc), retry_after=2) from None


class Log10Routes:
    def __init__(self, parts: GatewayParts) -> None:
        self.parts = parts

    @property
    def store(self) -> GatewayStore:
        if self.parts.store is None:
            raise Refusal(503, "(database)", "this gateway has no database for log10's calls")
        return self.parts.store

    async def caller(self, request: Request) -> Caller:
        token = header(request, TOKEN)
        credential = f"Bearer {token}" if token else header(request, "authorization")
        caller = await self.parts.gatekeeper.caller(credential)
        caller.require("feedback")
        return caller

    async def create_task(self, request: Request) -> dict[str, Any]:
        caller = await self.caller(request)
        _, fields = await json_object(request, self.parts.settings.max_event_bytes)
        body = _model(TaskIn, fields)
        store = self.store
        try:
            return dict(
                await _stored(
                    store,
                    lambda pool: log10_store.create_task(
                        pool,
                        store.metrics,
                        name=body.name,
                        schema=body.json_schema,
                        instruction=body.instruction,
                        selector=body.completion_tags_selector or [],
                        caller=caller.name,
                        task_id=uuid7(int(self.parts.now().timestamp() * 1000)),
                    ),
                )
            )
        except ConfigError as exc:
            field = "json_schema" if "schema" in exc.errors[0][0] else "name"
            raise bad_request(field, exc.errors[0][1]) from None
        except DefinitionConflict as exc:
            raise Refusal(409, "name", str(exc)) from None

    async def list_tasks(self, request: Request) -> dict[str, Any]:
        await self.caller(request)
        offset, limit = _page(request)
        page = await _stored(self.store, lambda pool: log10_store.list_tasks(pool, offset, limit))
        return {"data": page.rows, "total": page.total}

    async def get_task(self, task_id: str, request: Request) -> dict[str, Any]:
        await self.caller(request)
        wanted = _uuid(task_id, "task_id")
        task = await _stored(self.store, lambda pool: log10_store.find_task(pool, wanted))
        if task is None:
            raise Refusal(404, "task_id", f"no feedback task {task_id!r}")
        return dict(task)

    async def create_feedback(self, request: Request) -> dict[str, Any]:
        caller = await self.caller(request)
        raw, fields = await json_object(request, self.parts.settings.max_event_bytes)
        body = _model(FeedbackIn, fields)
        task = await _stored(self.store, lambda pool: log10_store.find_task(pool, body.task_id))
        if task is None:
            raise Refusal(404, "task_id", f"no feedback task {body.task_id}")
        if task["name"] not in self.parts.registry.metrics:
            await _stored(self.store, self.store.metrics.refresh)  # defined a moment ago
        now = self.parts.now()
        event: dict[str, Any] = {
            "metric": task["name"],
            "tag_selector": body.completion_tags_selector,
            "value": body.json_values,
            "source": {"type": "human", "id": caller.name},
            "timestamp": now.isoformat(),
        }
        if body.comment:
            event["rationale"] = body.comment
        try:
            admitted = self.parts.admission.feedback(event, now)
        except Refusal as refusal:
            raise _in_log10_terms(refusal) from None
        ids = await self.parts.intake.take_one(
            admitted,
            caller=caller.name,
            idempotency_key=None,
            digest=request_digest(FEEDBACK, raw),
        )
        answer = {
            "id": ids["feedback_id"],
            "task_id": str(body.task_id),
            "json_values": body.json_values,
            "completion_tags_selector": body.completion_tags_selector,
            "comment": body.comment or "",
            "created_at": now.isoformat(),
        }
        organization = _organization(request, body.organization_id)
        record = {
            "id": ids["feedback_id"],
            "ts": now,
            "task_id": str(body.task_id),
            "organization_id": organization,
            "caller": caller.name,
            "answer": answer,
        }
        await _stored(self.store, lambda pool: log10_store.remember_feedback(pool, record))
        return {**answer, "task_name": task["name"], "matched_completion_ids": []}

    async def list_feedback(self, request: Request) -> dict[str, Any]:
        await self.caller(request)
        offset, limit = _page(request)
        given = request.query_params.get("task_id") or None
        task_id = _uuid(given, "task_id") if given else None
        organization = _organization(request, None)
        page = await _stored(
            self.store,
            lambda pool: log10_store.list_feedback(pool, organization, task_id, offset, limit),
        )
        return {"data": page.rows, "total": page.total}

    async def get_feedback(self, feedback_id: str, request: Request) -> dict[str, Any]:
        await self.caller(request)
        wanted = _uuid(feedback_id, "id")
        organization = _organization(request, None)
        found = await _stored(
            self.store, lambda pool: log10_store.find_feedback(pool, organization, wanted)
        )
        if found is None:
            raise Refusal(404, "id", f"no feedback {feedback_id!r}")
        return dict(found)


def _model(model: type[TaskIn] | type[FeedbackIn], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _in_log10_terms(refusal: Refusal) -> Refusal:
    """The wire's field names as the log10 client knows them."""
    field = {"tag_selector": "completion_tags_selector", "value": "json_values"}.get(
        refusal.field.split(".")[0], refusal.field
    )
    reason = refusal.reason.replace("tag_selector", "completion_tags_selector")
    return Refusal(refusal.status, field, reason, retry_after=refusal.retry_after)


def _organization(request: Request, given: str | None) -> str:
    return (
        given or request.query_params.get("organization_id") or header(request, ORGANIZATION) or ""
    )


def _uuid(text: str, field: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise bad_request(field, f"not a UUID: {text!r}") from None


def _page(request: Request) -> tuple[int, int]:
    values = []
    for name, default in (("offset", 0), ("limit", 50)):
        text = request.query_params.get(name) or str(default)
        if not text.isdigit():
            raise bad_request(name, f"must be a whole number, got {text!r}")
        values.append(int(text))
    offset, limit = values
    if not 1 <= limit <= MAX_PAGE:
        raise bad_request("limit", f"from 1 to {MAX_PAGE}, got {limit}")
    return offset, limit


Handler = Callable[[], Awaitable[dict[str, Any]]]


async def _answered(handler: Handler) -> Response:
    try:
        return json_response(await handler(), 200)
    except Refusal as refusal:
        return log10_error(refusal)


def add_log10_routes(app: FastAPI, parts: GatewayParts) -> None:
    tags: list[str | Enum] = ["log10"]
    routes = Log10Routes(parts)
    ok = answers(200, "As log10's client reads it.")

    @app.post(TASKS, tags=tags, summary="log10's create feedback task", responses=ok)
    async def create_task(request: Request) -> Response:
        return await _answered(lambda: routes.create_task(request))

    @app.get(TASKS, tags=tags, summary="log10's list feedback tasks", responses=ok)
    async def list_tasks(request: Request) -> Response:
        return await _answered(lambda: routes.list_tasks(request))

    @app.get(TASKS + "/{task_id}", tags=tags, summary="log10's get feedback task", responses=ok)
    async def get_task(task_id: str, request: Request) -> Response:
        return await _answered(lambda: routes.get_task(task_id, request))

    @app.post(FEEDBACK, tags=tags, summary="log10's create feedback", responses=ok)
    async def create_feedback(request: Request) -> Response:
        return await _answered(lambda: routes.create_feedback(request))

    @app.get(FEEDBACK, tags=tags, summary="log10's list feedback", responses=ok)
    async def list_feedback(request: Request) -> Response:
        return await _answered(lambda: routes.list_feedback(request))

    @app.get(FEEDBACK + "/{feedback_id}", tags=tags, summary="log10's get feedback", responses=ok)
    async def get_feedback(feedback_id: str, request: Request) -> Response:
        return await _answered(lambda: routes.get_feedback(feedback_id, request))
