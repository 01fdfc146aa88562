"""MLflow 3's assessments in feedbackflow's terms: pure mapping, no I/O.

An assessment is an MLflow JSON object (``mlflow-tracing`` 3.17.2 sends and reads it); every
state it passes through is a feedback event on the wire:

- a feedback or an expectation (ground truth) is a feedback on the trace's prediction (trace id
  = join key), metric = assessment name; an expectation is marked in its metadata
  (``mlflow.assessment_type: expectation``), so that it is stored beside feedback and told apart;
- an update is a revision: the same target, metric and source with a later timestamp;
- an override is a new feedback plus, when its source or name differs, a retraction of the
  overridden one (MLflow's ``valid: false``); a delete is a retraction (a revision with no value),
  and deleting an override restores what it overrode, as MLflow does.

Every event carries ``mlflow.assessment_id`` in its metadata, so the history of one assessment
can be read from the feedback table.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ingest.gateway.errors import Refusal, from_validation
from ingest.sdk.producer import uuid7

SOURCES = {"HUMAN": "human", "LLM_JUDGE": "llm_judge", "CODE": "code"}
THEIR_SOURCES = {ours: theirs for theirs, ours in SOURCES.items()}
# MLflow's own default for a source without an id (mlflow.entities.AssessmentSource).
DEFAULT_SOURCE_ID = "default"
ASSESSMENT_ID, ASSESSMENT_TYPE, SPAN_ID = (
    "mlflow.assessment_id",
    "mlflow.assessment_type",
    "mlflow.span_id",
)
JSON_FORMAT = "JSON_FORMAT"
ONE_MILLISECOND = timedelta(milliseconds=1)
# What an update may change (MLflow's update_mask paths); source and span are immutable.
UPDATABLE = ("assessment_name", "feedback", "expectation", "rationale", "metadata")


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


class SerializedValue(_Lenient):
    serialization_format: str = JSON_FORMAT
    value: str


class ExpectationValue(_Lenient):
    value: JsonValue = None
    serialized_value: SerializedValue | None = None

    def parsed(self) -> JsonValue:
        if self.serialized_value is None:
            return self.value
        given = self.serialized_value
        if given.serialization_format != JSON_FORMAT:
            raise Refusal(
                400,
                "assessment.expectation.serialized_value.serialization_format",
                f"only {JSON_FORMAT} is taken, got {given.serialization_format!r}",
            )
        try:
            parsed: JsonValue = json.loads(given.value)
        except ValueError as exc:
            raise Refusal(
                400, "assessment.expectation.serialized_value.value", f"not JSON: {exc}"
            ) from None
        return parsed


class Assessment(_Lenient):
    assessment_name: str = Field(min_length=1)
    trace_id: str | None = None
    source: AssessmentSource = AssessmentSource()
    create_time: AwareDatetime | None = None
    last_update_time: AwareDatetime | None = None
    feedback: FeedbackValue | None = None
    expectation: ExpectationValue | None = None
    rationale: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    span_id: str | None = None
    overrides: str | None = None


class CreateAssessment(_Lenient):
    assessment: Assessment


def parsed(assessment: dict[str, Any], prefix: str = "assessment.") -> Assessment:
    try:
        return Assessment.model_validate(assessment)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None


def rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def derived_id(at: datetime, *parts: bytes) -> UUID:
    """A UUIDv7 at ``at`` whose random bits are SHA-256 of ``parts``: the same request gives the
    same id, so the client's retries of a create are one feedback."""
    digest = hashlib.sha256(b"\0".join(parts)).digest()
    return uuid7(int(at.timestamp() * 1000), int.from_bytes(digest[:10], "big") >> 6)


def source_of(assessment: Assessment) -> dict[str, str]:
    source_type = SOURCES.get(assessment.source.source_type.upper())
    if source_type is None:
        known = ", ".join(SOURCES)
        raise Refusal(400, "assessment.source.source_type", f"one of {known}")
    return {"type": source_type, "id": assessment.source.source_id or DEFAULT_SOURCE_ID}


def revision_key(assessment: Assessment) -> tuple[str, str, str]:
    """What makes two feedback events revisions of each other: metric and source."""
    source = source_of(assessment)
    return assessment.assessment_name, source["type"], source["id"]


def feedback_event(
    stored: dict[str, Any], trace_id: str, at: datetime, feedback_id: UUID | None = None
) -> dict[str, Any]:
    """The wire feedback carrying an assessment's value (MLflow JSON ``stored``) at ``at``."""
    assessment = parsed(stored)
    fields = _common(stored, assessment, trace_id, at, feedback_id)
    if assessment.expectation is not None:
        fields["metadata"][ASSESSMENT_TYPE] = "expectation"
        fields["value"] = assessment.expectation.parsed()
    elif assessment.feedback is not None and assessment.feedback.error is not None:
        error = assessment.feedback.error
        fields["error"] = {"code": error.error_code, "message": error.error_message or ""}
    elif assessment.feedback is not None:
        fields["value"] = assessment.feedback.value
    else:
        raise Refusal(400, "assessment", "needs a feedback or an expectation")
    if assessment.rationale is not None:
        fields["rationale"] = assessment.rationale
    return fields


def retraction_event(
    stored: dict[str, Any], trace_id: str, at: datetime, feedback_id: UUID | None = None
) -> dict[str, Any]:
    """The wire retraction withdrawing an assessment's value (a delete, an override)."""
    fields = _common(stored, parsed(stored), trace_id, at, feedback_id)
    fields["retracted"] = True
    return fields


def _common(
    stored: dict[str, Any],
    assessment: Assessment,
    trace_id: str,
    at: datetime,
    feedback_id: UUID | None,
) -> dict[str, Any]:
    metadata = dict(assessment.metadata)
    metadata[ASSESSMENT_ID] = str(stored["assessment_id"])
    if assessment.span_id:
        metadata[SPAN_ID] = assessment.span_id
    fields: dict[str, Any] = {
        "metric": assessment.assessment_name,
        "join_key": trace_id,
        "source": source_of(assessment),
        "timestamp": at.isoformat(),
        "metadata": metadata,
    }
    if feedback_id is not None:
        fields["feedback_id"] = str(feedback_id)
    return fields


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def mask_paths(update_mask: Any, assessment: dict[str, Any]) -> list[str]:
    """MLflow's ``update_mask`` (protobuf's FieldMask: ``"assessmentName,feedback"`` in JSON, or
    ``{"paths": [...]}``) as snake_case paths; absent, the fields the update carries."""
    if isinstance(update_mask, str):
        paths = [p.strip() for p in update_mask.split(",") if p.strip()]
    elif isinstance(update_mask, dict) and isinstance(update_mask.get("paths"), list):
        paths = [str(p) for p in update_mask["paths"]]
    elif update_mask is None:
        paths = [p for p in UPDATABLE if p in assessment]
    else:
        raise Refusal(400, "update_mask", "must be a field mask: a string or {paths: [...]}")
    snake = [_CAMEL.sub("_", p).lower() for p in paths]
    wrong = [p for p in snake if p not in UPDATABLE]
    if wrong:
        raise Refusal(400, "update_mask", f"cannot update {wrong}; updatable: {list(UPDATABLE)}")
    return snake


def updated(
    stored: dict[str, Any], given: dict[str, Any], paths: list[str], now: datetime
) -> dict[str, Any]:
    """The stored assessment with the masked fields of ``given`` applied (metadata merged, the
    new keys winning, as MLflow's own store does)."""
    result = dict(stored)
    for path in paths:
        if path == "metadata":
            result["metadata"] = {**stored.get("metadata", {}), **given.get("metadata", {})}
        elif path in given:
            result[path] = given[path]
    if "feedback" in paths and "expectation" in stored:
        raise Refusal(400, "update_mask", "cannot update feedback on an expectation")
    if "expectation" in paths and "feedback" in stored:
        raise Refusal(400, "update_mask", "cannot update an expectation on a feedback")
    result["last_update_time"] = rfc3339(now)
    parsed(result)
    return result


def later_than(stored: dict[str, Any], at: datetime) -> datetime:
    """``at``, or just after the assessment's last update if that is later: a revision must be
    later than what it revises to win."""
    last = parsed(stored).last_update_time
    return max(at, last + ONE_MILLISECOND) if last is not None else at


def from_feedback_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored feedback (any route's) as an MLflow assessment, for reading it back."""
    metadata = dict(row["metadata"])
    span_id = metadata.pop(SPAN_ID, None)
    kind = metadata.pop(ASSESSMENT_TYPE, "feedback")
    metadata.pop(ASSESSMENT_ID, None)
    value = next(
        (row[c] for c in ("value_bool", "value_float", "value_text") if row[c] is not None),
        row["value_json"],
    )
    outcome: dict[str, Any] = {"value": value}
    if row["error_code"] is not None:
        error = {"error_code": row["error_code"], "error_message": row["error_message"]}
        outcome = {"error": error}
    time = rfc3339(row["ts"])
    assessment = {
        "assessment_id": str(row["feedback_id"]),
        "assessment_name": row["metric"],
        "trace_id": row["target_join_key"],
        "source": {
            "source_type": THEIR_SOURCES.get(row["source_type"], "HUMAN"),
            "source_id": row["source_id"],
        },
        "create_time": time,
        "last_update_time": time,
        kind: outcome,
        "metadata": metadata,
        "valid": True,
    }
    if row["rationale"] is not None:
        assessment["rationale"] = row["rationale"]
    if span_id is not None:
        assessment["span_id"] = span_id
    return assessment
