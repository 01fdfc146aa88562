"""MLflow 3's assessment routes, as ``mlflow-tracing`` 3.17.2 calls them (measured).

``log_feedback`` / ``log_expectation`` / ``override_feedback``: ``POST .../assessments``;
``get_assessment``: ``GET .../assessments/{id}``; ``update_assessment``: ``PATCH`` with an
``update_mask``; ``delete_assessment``: ``DELETE`` with a JSON body.  The client needs exactly
200 with ``{"assessment": ...}`` back and errors as ``{"error_code", "message"}``; it retries
408/429/5xx up to eight times, POST included.

How each call becomes feedback events is ``ingest.gateway.mlflow_model``.  The events are
published first (answered only after the broker's ack, like every route); then the directory
``feedbackflow.mlflow_assessments`` records the assessment as answered, so that ``get`` reads it
at once.  Retries: a create's ids are derived from the request, and an update's or delete's
events are remembered under a key derived from the request (the Idempotency-Key machinery), so a
retry republishes the same bytes and the worker stores them once.

An assessment name the metric config does not declare is defined at run time as an untyped
(json) metric, unless ``FEEDBACKFLOW_GATEWAY__STRICT_METRICS=true`` makes it a 400.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, TypeVar
from uuid import UUID

from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from ingest.gateway import mlflow_model as model
from ingest.gateway.admission import Admitted
from ingest.gateway.auth import Caller
from ingest.gateway.body import json_object
from ingest.gateway.errors import Refusal, from_validation
from ingest.gateway.intake import Plan, request_digest
from ingest.gateway.native import AUTHORIZATION, json_response
from ingest.gateway.openapi import answers
from ingest.gateway.params import header
from ingest.gateway.parts import GatewayParts, GatewayStore
from ingest.metrics.registry import ConfigError
from workers.postgres.metric_definitions import DefinitionConflict
from workers.postgres.mlflow_assessments import StoredAssessment

PREFIX = "/api/3.0/mlflow/traces/{trace_id}/assessments"
ONE = PREFIX + "/{assessment_id}"
_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "INVALID_PARAMETER_VALUE",
    415: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
    503: "TEMPORARILY_UNAVAILABLE",
}
UNTYPED = {
    "type": "json",
    "description": "an MLflow assessment name, defined at run time (untyped)",
}
T = TypeVar("T")


def mlflow_error(refusal: Refusal) -> Response:
    body = {"error_code": _CODES.get(refusal.status, "INTERNAL_ERROR"), "message": str(refusal)}
    response = json_response(body, refusal.status)
    response.headers.update(refusal.headers())
    return response


async def _stored_or_unavailable(call: Awaitable[T]) -> T:
    try:
        return await call
    except ConnectionError as exc:
        raise Refusal(503, "(database)", str(exc), retry_after=2) from None


class MlflowAssessments:
    """The four calls, over the gateway's parts."""

    def __init__(self, parts: GatewayParts) -> None:
        self.parts = parts

    @property
    def store(self) -> GatewayStore:
        if self.parts.store is None:
            raise Refusal(503, "(database)", "this gateway has no database for MLflow's calls")
        return self.parts.store

    async def create(self, trace_id: str, request: Request) -> dict[str, Any]:
        caller = await self._caller(request)
        raw, fields = await json_object(request, self.parts.settings.max_event_bytes)
        try:
            body = model.CreateAssessment.model_validate(fields).assessment
        except ValidationError as exc:
            raise from_validation(exc) from None
        now = self.parts.now()
        created = body.create_time or now
        assessment_id = model.derived_id(created, caller.name.encode(), raw)
        answer = {
            **fields["assessment"],
            "assessment_id": str(assessment_id),
            "trace_id": trace_id,
            "create_time": model.rfc3339(created),
            "last_update_time": model.rfc3339(body.last_update_time or created),
            "valid": True,
        }
        await self._define_if_unknown(body.assessment_name, caller)
        events = [model.feedback_event(answer, trace_id, created, assessment_id)]
        overridden = None
        if body.overrides:
            overridden = await self._find(trace_id, body.overrides)
            if model.revision_key(model.parsed(overridden.assessment)) != model.revision_key(body):
                at = model.later_than(overridden.assessment, created)
                retraction_id = model.derived_id(at, caller.name.encode(), raw, b"overrides")
                events.append(
                    model.retraction_event(overridden.assessment, trace_id, at, retraction_id)
                )
        await self._publish(events, caller, raw, idempotent=False)
        await _stored_or_unavailable(
            self.store.remember_assessment(trace_id, answer, assessment_id)
        )
        if overridden is not None:
            invalid = {**overridden.assessment, "valid": False}
            await _stored_or_unavailable(
                self.store.revise_assessment(invalid, overridden.feedback_id)
            )
        return answer

    async def get(self, trace_id: str, assessment_id: str, request: Request) -> dict[str, Any]:
        await self._caller(request)
        stored = await self._lookup(assessment_id)
        if stored is not None:
            return self._on_trace(stored, trace_id, assessment_id).assessment
        # Not MLflow's: feedback sent through another route reads back by its feedback id.
        row = None
        if self.parts.read_feedback is not None:
            row = await _stored_or_unavailable(self.parts.read_feedback(assessment_id))
        if row is None or row["target_join_key"] != trace_id:
            raise _missing(trace_id, assessment_id)
        return model.from_feedback_row(dict(row))

    async def update(self, trace_id: str, assessment_id: str, request: Request) -> dict[str, Any]:
        caller = await self._caller(request)
        raw, fields = await json_object(request, self.parts.settings.max_event_bytes)
        given = fields.get("assessment")
        if not isinstance(given, dict):
            raise Refusal(400, "assessment", "must be an object")
        stored = await self._find(trace_id, assessment_id)
        paths = model.mask_paths(fields.get("update_mask"), given)
        now = self.parts.now()
        at = model.later_than(stored.assessment, now)
        revised = model.updated(stored.assessment, given, paths, at)
        name = model.parsed(revised).assessment_name
        await self._define_if_unknown(name, caller)
        events = [model.feedback_event(revised, trace_id, at)]
        if name != model.parsed(stored.assessment).assessment_name:
            events.append(model.retraction_event(stored.assessment, trace_id, at))
        ids = await self._publish(events, caller, raw, idempotent=True)
        await _stored_or_unavailable(self.store.revise_assessment(revised, ids[0]))
        return revised

    async def delete(self, trace_id: str, assessment_id: str, request: Request) -> None:
        """Recorded as a retraction; deleting an override restores what it overrode.  Deleting
        what is not there is a no-op, as in MLflow's own stores."""
        caller = await self._caller(request)
        try:
            stored = await self._find(trace_id, assessment_id)
        except Refusal as refusal:
            if refusal.status == 404:
                return
            raise
        at = model.later_than(stored.assessment, self.parts.now())
        events = [model.retraction_event(stored.assessment, trace_id, at)]
        restored: StoredAssessment | None = None
        overrides = stored.assessment.get("overrides")
        if overrides:
            try:
                restored = await self._find(trace_id, overrides)
            except Refusal:
                restored = None
        if restored is not None:
            # Just after the retraction: it wins even where both share metric and source.
            valid = {**restored.assessment, "valid": True}
            events.append(model.feedback_event(valid, trace_id, at + model.ONE_MILLISECOND))
        ids = await self._publish(events, caller, request.url.path.encode(), idempotent=True)
        await _stored_or_unavailable(
            self.store.revise_assessment(stored.assessment, ids[0], deleted=True)
        )
        if restored is not None:
            valid = {**restored.assessment, "valid": True}
            await _stored_or_unavailable(self.store.revise_assessment(valid, ids[1]))

    async def _caller(self, request: Request) -> Caller:
        caller = await self.parts.gatekeeper.caller(header(request, AUTHORIZATION))
        caller.require("feedback")
        return caller

    async def _find(self, trace_id: str, assessment_id: str) -> StoredAssessment:
        """The assessment on this trace, not deleted, else a 404."""
        stored = await self._lookup(assessment_id)
        if stored is None:
            raise _missing(trace_id, assessment_id)
        return self._on_trace(stored, trace_id, assessment_id)

    async def _lookup(self, assessment_id: str) -> StoredAssessment | None:
        try:
            wanted = UUID(assessment_id)
        except ValueError:
            return None
        return await _stored_or_unavailable(self.store.find_assessment(wanted))

    @staticmethod
    def _on_trace(stored: StoredAssessment, trace_id: str, assessment_id: str) -> StoredAssessment:
        if stored.deleted or stored.trace_id != trace_id:
            raise _missing(trace_id, assessment_id)
        return stored

    async def _define_if_unknown(self, name: str, caller: Caller) -> None:
        if name in self.parts.registry.metrics:
            return
        if self.parts.settings.strict_metrics:
            known = ", ".join(sorted(self.parts.registry.metrics))
            raise Refusal(
                400,
                "assessment.assessment_name",
                f"unknown metric {name!r} (known: {known}); this gateway takes only "
                "configured metrics (FEEDBACKFLOW_GATEWAY__STRICT_METRICS)",
            )
        try:
            await _stored_or_unavailable(
                self.store.define_metric(name, UNTYPED, origin="mlflow", created_by=caller.name)
            )
        except ConfigError as exc:
            raise Refusal(400, "assessment.assessment_name", str(exc.errors[0][1])) from None
        except DefinitionConflict:
            pass  # defined meanwhile by another gateway; the registry follows within seconds

    async def _publish(
        self, events: list[dict[str, Any]], caller: Caller, raw: bytes, *, idempotent: bool
    ) -> list[UUID]:
        """Publish the events (after the broker's ack), or raise the first refusal; the ids of
        the feedback published.  ``idempotent``: remembered under a key derived from the request,
        so that the client's retry republishes the first attempt's events."""
        now = self.parts.now()
        admitted: list[Admitted] = [self.parts.admission.feedback(e, now) for e in events]
        digest = request_digest(PREFIX, raw, str(len(events)))
        outcomes = await self.parts.intake.take(
            Plan(tuple(admitted)),
            caller=caller.name,
            idempotency_key="mlflow:" + hashlib.sha256(digest).hexdigest() if idempotent else None,
            digest=digest,
        )
        for outcome in outcomes:
            outcome.raise_refusal()
        return [UUID(outcome.body["feedback_id"]) for outcome in outcomes]


def _missing(trace_id: str, assessment_id: str) -> Refusal:
    return Refusal(404, "assessment_id", f"no assessment {assessment_id!r} on trace {trace_id!r}")


Handler = Callable[[], Awaitable[Any]]


async def _answered(handler: Handler, wrap: Callable[[Any], Any]) -> Response:
    try:
        result = await handler()
    except Refusal as refusal:
        return mlflow_error(refusal)
    return json_response(wrap(result), 200)


def add_mlflow_routes(app: FastAPI, parts: GatewayParts) -> None:
    tags: list[str | Enum] = ["MLflow"]
    calls = MlflowAssessments(parts)

    def assessment(result: Any) -> dict[str, Any]:
        return {"assessment": result}

    @app.post(
        PREFIX,
        tags=tags,
        summary="MLflow's create assessment (feedback, expectation, override)",
        responses=answers(200, "The assessment, with its assessment_id."),
    )
    async def create_assessment(trace_id: str, request: Request) -> Response:
        return await _answered(lambda: calls.create(trace_id, request), assessment)

    @app.get(
        ONE,
        tags=tags,
        summary="MLflow's get assessment",
        responses=answers(200, "The assessment as it now stands."),
    )
    async def get_assessment(trace_id: str, assessment_id: str, request: Request) -> Response:
        return await _answered(lambda: calls.get(trace_id, assessment_id, request), assessment)

    @app.patch(
        ONE,
        tags=tags,
        summary="MLflow's update assessment (a revision; history kept)",
        responses=answers(200, "The updated assessment."),
    )
    async def update_assessment(trace_id: str, assessment_id: str, request: Request) -> Response:
        return await _answered(lambda: calls.update(trace_id, assessment_id, request), assessment)

    @app.delete(
        ONE,
        tags=tags,
        summary="MLflow's delete assessment (recorded as a retraction)",
        responses=answers(200, "Empty: the assessment no longer counts."),
    )
    async def delete_assessment(trace_id: str, assessment_id: str, request: Request) -> Response:
        return await _answered(lambda: calls.delete(trace_id, assessment_id, request), _empty)


def _empty(_result: Any) -> dict[str, Any]:
    return {}
