"""Wire format v1: the JSON objects services put on the `predictions` and `feedback` topics.

These models are a public contract: producers in any language write to them, so they are strict
(unknown fields are rejected, so a typo such as ``"rationle"`` is an error and not silently lost),
and every error names the field.  The JSON Schema files under ``ingest/wire/schemas/`` are generated
from these models (``feedbackflow schemas``) and a test fails when the two drift apart.

What these models cannot check alone -- whether a metric exists, whether its value has the right
type, whether the target suits the metric's level -- is checked by ``ingest.metrics.registry``.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails

# Bounds that keep one event from costing a whole window: a 64 KiB id or tag is a bug upstream.
MAX_NAME = 256
MAX_TAG_VALUE = 4096


# Numbers are epoch milliseconds (the wire contract), never seconds: no guessing by size.  The
# models read them so (``val_temporal_unit``) in pydantic-core, with no Python call per event.
EPOCH_NUMBERS = ConfigDict(val_temporal_unit="milliseconds")
Timestamp = Annotated[
    AwareDatetime,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "description": "epoch milliseconds"},
            ],
        }
    ),
    Field(
        description="RFC 3339 with a UTC offset, or epoch milliseconds. "
        "Default: the time the event reached Kafka."
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
FlatStrings = Annotated[
    dict[Name, Annotated[str, Field(max_length=MAX_TAG_VALUE)]],
    Field(description="Flat string-to-string map."),
]


_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}


def error_text(error: ErrorDetails) -> str:
    """pydantic's message, naming the JSON type received where the type was wrong: "Input should
    be a valid datetime" alone does not tell a producer that it sent ``true``."""
    message = error["msg"]
    if error["type"].endswith("_type") and "input" in error:
        value = error["input"]
        received = _JSON_TYPES.get(type(value)) or (
            "null" if value is None else "an array" if isinstance(value, list) else "an object"
        )
        message = f"{message}, got {received}"
    return message


class _WireModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, **EPOCH_NUMBERS
    )


class Prediction(_WireModel):
    """One model call, logged by the service that made it."""

    model_config = ConfigDict(
        json_schema_extra={"$id": "https://feedbackflow.dev/schemas/v1/prediction.json"},
    )

    prediction_id: UUID = Field(description="Unique id of the prediction; the SDK makes UUIDv7.")
    join_key: Name | None = Field(
        default=None,
        description="Key that feedback may name instead of the prediction id "
        "(default: the prediction id as text). Also the Kafka message key.",
    )
    episode_id: UUID | None = Field(
        default=None, description="Groups the predictions of one multi-step episode."
    )
    application: Name = Field(description="The model-backed function, e.g. generate_haiku.")
    model: Name | None = Field(default=None, description="Model, variant or version.")
    inputs: dict[str, JsonValue] = Field(default_factory=dict)
    outputs: dict[str, JsonValue] = Field(default_factory=dict)
    tags: FlatStrings = Field(default_factory=dict)
    timestamp: Timestamp | None = None
    feedback: dict[Name, JsonValue] | None = Field(
        default=None,
        description="Feedback known when the prediction is logged (Gantry's log_completion "
        "feedback), metric to value: stored as ordinary feedback joined to this prediction, "
        "at its time, with an id derived from the prediction id and the metric.",
    )

    @property
    def effective_join_key(self) -> str:
        return self.join_key if self.join_key is not None else str(self.prediction_id)


SourceType = Literal["human", "llm_judge", "code", "end_user"]


class Source(_WireModel):
    """Who gave the feedback (MLflow's assessment source)."""

    type: SourceType
    id: Name | None = Field(
        default=None,
        description="Annotator, judge or check id; feedback with the same target, metric and "
        "source id revises the earlier one.",
    )


class FeedbackError(_WireModel):
    """Stands in for ``value`` when a judge or check failed: the failure is recorded, not lost."""

    code: Name
    message: Annotated[str, Field(max_length=MAX_TAG_VALUE)]


TargetKind = Literal["prediction_id", "join_key", "episode_id", "tag_selector"]
TARGETS: tuple[TargetKind, ...] = ("prediction_id", "join_key", "episode_id", "tag_selector")
MAX_SELECTOR_ITEMS = 16
SelectorItem = Annotated[str, Field(min_length=1, max_length=MAX_NAME + 1 + MAX_TAG_VALUE)]


class Feedback(_WireModel):
    """One judgement about a prediction (or an episode), possibly long after it."""

    model_config = ConfigDict(
        json_schema_extra={"$id": "https://feedbackflow.dev/schemas/v1/feedback.json"},
    )

    feedback_id: UUID = Field(description="Idempotency key: the same id is stored once.")
    metric: Name = Field(
        description="A metric from the metric config, or `comment` / `demonstration`."
    )
    prediction_id: UUID | None = None
    join_key: Name | None = None
    episode_id: UUID | None = None
    tag_selector: list[SelectorItem] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SELECTOR_ITEMS,
        description="Every prediction carrying all these tags (log10's completion tags "
        "selector): `key=value` (the tag has that value) or `key` (the tag is present). At least "
        "one item must name a tag key the pipeline indexes (pipeline.selectable_tags). Stored as "
        "one feedback per matched prediction; pending while nothing matches.",
    )
    value: JsonValue = Field(
        default=None,
        description="Typed by the metric. Exactly one of value, error and retracted.",
    )
    error: FeedbackError | None = None
    retracted: bool = Field(
        default=False,
        description="true withdraws the feedback of the same target, metric and source id: "
        "a revision with no value (MLflow's delete_assessment), stored and superseding the "
        "earlier one, so current values no longer count it. Needs source.id.",
    )
    rationale: str | None = Field(default=None, max_length=65536)
    source: Source | None = None
    tags: FlatStrings = Field(default_factory=dict)
    metadata: FlatStrings = Field(default_factory=dict)
    timestamp: Timestamp | None = None

    @model_validator(mode="after")
    def _exactly_one_target_and_outcome(self) -> Feedback:
        targets = [name for name in TARGETS if getattr(self, name) is not None]
        if len(targets) != 1:
            found = ", ".join(targets) if targets else "none"
            raise ValueError(f"exactly one of {', '.join(TARGETS)} is required (found: {found})")
        for item in self.tag_selector or ():
            if item.startswith("="):
                raise ValueError(
                    f"tag_selector item {item!r}: `key=value` or `key`, and the key is not empty"
                )
        outcomes = (self.value is not None) + (self.error is not None) + self.retracted
        if outcomes != 1:
            raise ValueError("exactly one of value, error and retracted (true) is required")
        if self.retracted and (self.source is None or self.source.id is None):
            raise ValueError(
                "a retraction needs source.id: it withdraws that source's feedback on the target"
            )
        return self

    @property
    def target_kind(self) -> TargetKind:
        if self.prediction_id is not None:
            return "prediction_id"
        if self.join_key is not None:
            return "join_key"
        if self.episode_id is not None:
            return "episode_id"
        return "tag_selector"

    @property
    def target(self) -> str:
        """The target as text: also the Kafka message key."""
        if self.tag_selector is not None:
            return selector_text(self.tag_selector)
        return str(self.prediction_id or self.join_key or self.episode_id)


def selector_text(items: list[str]) -> str:
    """A tag selector as one text (its Kafka key): the items sorted, without repeats."""
    return "tags:" + ",".join(sorted(set(items)))
