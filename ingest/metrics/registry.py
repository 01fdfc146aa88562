"""The metric config (``feedbackflow.toml``): which metrics exist, their types and levels.

Like TensorZero's ``[metrics.*]``: a feedback names a metric, and the metric decides what its value
may be and what it may target.  The config is checked whole at start-up so that a typo fails the
process with the metric's name and the problem, instead of dead-lettering every event later; every
problem is reported at once, so that a config with several is not fixed one restart at a time.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import jsonschema
from jsonschema.protocols import Validator
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ingest.wire.events import Feedback, TargetKind

MetricType = Literal["boolean", "float", "categorical", "comment", "demonstration", "json"]
# "any": the built-in comment, which TensorZero takes on an inference or an episode alike.
Level = Literal["prediction", "episode", "any"]
METRIC_TYPES: tuple[MetricType, ...] = (
    "boolean",
    "float",
    "categorical",
    "comment",
    "demonstration",
    "json",
)
BUILTIN_METRICS = ("comment", "demonstration")
_LEVEL_ALIASES: dict[str, Level] = {
    "prediction": "prediction",
    "inference": "prediction",
    "episode": "episode",
}
# Which feedback targets a level admits: a join key names one prediction, like its id.
# A tag selector names predictions too (each it matches gets the feedback).
LEVEL_TARGETS: dict[Level, frozenset[TargetKind]] = {
    "prediction": frozenset({"prediction_id", "join_key", "tag_selector"}),
    "episode": frozenset({"episode_id"}),
    "any": frozenset({"prediction_id", "join_key", "episode_id", "tag_selector"}),
}


class ConfigError(ValueError):
    """The config file is unusable; the message names every problem, one a line, with its place.

    All of them at once, so that fixing a config is not one start-up per mistake.  ``errors``
    holds them as (location, reason) pairs for a caller that shows them its own way; ``path`` is
    the file, when there is one, and starts every line of the message."""

    def __init__(self, errors: Sequence[tuple[str, str]], path: Path | None = None) -> None:
        self.errors = list(errors)
        self.path = path
        super().__init__(
            "\n".join(
                ": ".join(part for part in (str(path) if path else "", location, reason) if part)
                for location, reason in self.errors
            )
        )

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[tuple[str, str]], Path | None]]:
        # The default rebuilds an exception from its message, which is not what this one takes.
        return type(self), (self.errors, self.path)


class TypedValue(NamedTuple):
    """A feedback value sorted into the column its type is stored in.

    A tuple, built without a Python-level constructor where it is built per event: a frozen
    dataclass's constructor was a large share of what checking a feedback cost
    (docs/performance.md)."""

    boolean: bool | None = None
    number: float | None = None
    text: str | None = None
    json: Any = None


_new = tuple.__new__
NO_VALUE = TypedValue()
_TRUE, _FALSE = TypedValue(boolean=True), TypedValue(boolean=False)


@dataclass(frozen=True)
class Metric:
    name: str
    type: MetricType
    level: Level = "prediction"
    optimize: Literal["max", "min"] = "max"
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None
    # What the metric measures, for the people who read its feedback.
    description: str | None = None
    _validator: Validator | None = field(default=None, compare=False, repr=False)

    def typed_value(self, value: Any) -> TypedValue:
        """Check ``value`` against the metric; raise ValueError saying why it does not fit."""
        match self.type:
            case "boolean":
                if not isinstance(value, bool):
                    raise ValueError(f"metric {self.name!r} is boolean; got {_kind(value)}")
                return _TRUE if value else _FALSE
            case "float":
                return _new(TypedValue, (None, self._number(value), None, None))
            case "categorical":
                if not isinstance(value, str) or value not in self.categories:
                    raise ValueError(
                        f"metric {self.name!r} takes one of {list(self.categories)}; got {value!r}"
                    )
                return _new(TypedValue, (None, None, value, None))
            case "comment":
                if not isinstance(value, str):
                    raise ValueError(f"metric {self.name!r} is a comment; got {_kind(value)}")
                return _new(TypedValue, (None, None, value, None))
            case "demonstration":
                return _new(TypedValue, (None, None, None, value))
            case "json":
                self._match_schema(value)
                return _new(TypedValue, (None, None, None, value))
        raise AssertionError(self.type)  # pragma: no cover - exhaustive match

    def _number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"metric {self.name!r} is a number; got {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"metric {self.name!r}: {value} is too large") from None
        if not math.isfinite(number):
            raise ValueError(f"metric {self.name!r} must be finite")
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"metric {self.name!r}: {number} is below min {self.minimum}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"metric {self.name!r}: {number} is above max {self.maximum}")
        return number

    def _match_schema(self, value: Any) -> None:
        if self._validator is None:
            return
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ValueError(
                f"metric {self.name!r}: value at {where} does not match its schema: {error.message}"
            )


@dataclass(frozen=True)
class MetricRegistry:
    """Every metric a feedback may name, built-ins included."""

    metrics: Mapping[str, Metric]

    def with_metrics(self, extra: Mapping[str, Metric]) -> MetricRegistry:
        """This registry with ``extra`` added (metrics defined at run time); its own win."""
        return MetricRegistry(metrics={**extra, **self.metrics})

    def check(self, feedback: Feedback) -> tuple[Metric, TypedValue]:
        """The metric and typed value of a wire-valid feedback, or ValueError naming the field."""
        metric = self.targeting(feedback.metric, feedback.target_kind, "metric")
        if feedback.error is not None or feedback.retracted:
            return metric, NO_VALUE
        try:
            return metric, metric.typed_value(feedback.value)
        except ValueError as exc:
            raise FieldError("value", str(exc)) from None

    def targeting(self, name: str, target_kind: TargetKind, field_name: str) -> Metric:
        """The metric ``name``, which must exist and take ``target_kind``; else FieldError on
        ``field_name`` (or on the target for a wrong level)."""
        metric = self.metrics.get(name)
        if metric is None:
            known = ", ".join(sorted(self.metrics))
            raise FieldError(field_name, f"unknown metric {name!r} (known: {known})")
        allowed = LEVEL_TARGETS[metric.level]
        if target_kind not in allowed:
            raise FieldError(
                target_kind if field_name == "metric" else field_name,
                f"metric {metric.name!r} is {metric.level}-level and takes "
                f"{' or '.join(sorted(allowed))}, not {target_kind}",
            )
        return metric

    def embedded(self, name: str, value: Any) -> tuple[Metric, TypedValue]:
        """A prediction's own feedback (``Prediction.feedback``): a prediction-level metric and
        its typed value, or FieldError on ``feedback.<name>``."""
        where = f"feedback.{name}"
        metric = self.targeting(name, "prediction_id", where)
        try:
            return metric, metric.typed_value(value)
        except ValueError as exc:
            raise FieldError(where, str(exc)) from None


class FieldError(ValueError):
    """A semantic error in one field of an event."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


_JSON_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}


def _kind(value: Any) -> str:
    """The JSON kind of a value, as a producer in any language would name it."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _JSON_KINDS.get(type(value), type(value).__name__)


class MetricTable(BaseModel):
    """One ``[metrics.<name>]`` table as written, checked field by field.

    Every field has a plain validator with the config's own wording, so that each mistake is
    reported at its key and a mistake in one key does not hide those in the others.  Rules that
    relate two keys live in the validator of the later key, not in a model validator (which
    would not run once any key is wrong); the earlier key is in ``info.data`` only if it was
    valid, so a rule is not judged against a value already reported as wrong.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Declared first: the rules of the other keys depend on it.  An absent type is reported like
    # a wrong one, hence a default that the validator refuses.
    type: MetricType = Field(default=None, validate_default=True)
    level: Level = "prediction"
    optimize: Literal["max", "min"] = "max"
    minimum: int | float | None = Field(default=None, alias="min")
    maximum: int | float | None = Field(default=None, alias="max")
    # Validated when absent too: a categorical metric must have them.
    categories: tuple[str, ...] | None = Field(default=None, validate_default=True)
    json_schema: Mapping[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None

    @field_validator("type", mode="plain")
    @classmethod
    def _type(cls, value: Any) -> MetricType:
        if value not in METRIC_TYPES:
            raise ValueError(f"must be one of {list(METRIC_TYPES)}, got {value!r}")
        return cast(MetricType, value)

    @field_validator("level", mode="plain")
    @classmethod
    def _level(cls, value: Any) -> Level:
        level = _LEVEL_ALIASES.get(value) if isinstance(value, str) else None
        if level is None:
            raise ValueError(f"must be prediction (alias inference) or episode, got {value!r}")
        return level

    @field_validator("optimize", mode="plain")
    @classmethod
    def _optimize(cls, value: Any) -> Literal["max", "min"]:
        if value not in ("max", "min"):
            raise ValueError(f"must be 'max' or 'min', got {value!r}")
        return cast(Literal["max", "min"], value)

    @field_validator("minimum", "maximum", mode="plain")
    @classmethod
    def _bound(cls, value: Any, info: ValidationInfo) -> int | float | None:
        if value is None:
            return None
        if info.data.get("type") not in (None, "float"):
            raise ValueError("only a float metric takes numeric bounds")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"a bound must be a number, got {_kind(value)}")
        minimum = info.data.get("minimum")
        if info.field_name == "maximum" and minimum is not None and minimum > value:
            raise ValueError(f"min {minimum} is greater than max {value}")
        return value

    @field_validator("categories", mode="plain")
    @classmethod
    def _categories(cls, value: Any, info: ValidationInfo) -> tuple[str, ...] | None:
        mtype = info.data.get("type")
        if value is None and mtype != "categorical":
            return None
        if value is not None and mtype not in (None, "categorical"):
            raise ValueError("only a categorical metric takes categories")
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(category, str) for category in value)
        ):
            raise ValueError(
                f"a categorical metric needs a list of strings, at least one, got {value!r}"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"duplicates in {value}")
        return tuple(value)

    @field_validator("json_schema", mode="plain")
    @classmethod
    def _schema(cls, value: Any, info: ValidationInfo) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if info.data.get("type") not in (None, "json"):
            raise ValueError("only a json metric takes a schema")
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a JSON Schema object, got {_kind(value)}")
        try:
            jsonschema.validators.validator_for(value).check_schema(dict(value))
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @field_validator("description", mode="plain")
    @classmethod
    def _description(cls, value: Any) -> str | None:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, got {_kind(value)}")
        return value

    def metric(self, name: str) -> Metric:
        """The metric this table declares; its JSON Schema validator is built once, here."""
        validator: Validator | None = None
        if self.json_schema is not None:
            schema = dict(self.json_schema)
            validator = jsonschema.validators.validator_for(schema)(schema)
        return Metric(
            name=name,
            type=self.type,
            level=self.level,
            optimize=self.optimize,
            minimum=None if self.minimum is None else float(self.minimum),
            maximum=None if self.maximum is None else float(self.maximum),
            categories=self.categories or (),
            json_schema=self.json_schema,
            description=self.description,
            _validator=validator,
        )


# The keys as written in the file, for the message that names an unknown one.
_TABLE_KEYS = sorted(info.alias or name for name, info in MetricTable.model_fields.items())
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_METRIC_NAME_RULE = "a metric name is a letter or _, then letters, digits, _ . -; at most 128"


def _metric_from_table(name: str, table: Any, errors: list[tuple[str, str]]) -> Metric | None:
    """The metric of one table, or None with its problems added to ``errors``."""
    where = f"[metrics.{name}]"
    if not isinstance(table, Mapping):
        errors.append((where, "must be a table"))
        return None
    try:
        return MetricTable.model_validate(dict(table)).metric(name)
    except ValidationError as exc:
        errors.extend(_located(where, exc))
        return None


def _located(where: str, exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic's errors of one table, in the config's terms: ``[metrics.x] key`` and a reason."""
    found: list[tuple[str, str]] = []
    unknown: list[str] = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            unknown.append(key)
        elif error["type"] == "value_error":
            found.append((f"{where} {key}", str(error["ctx"]["error"])))
        else:  # pragma: no cover - every field has a plain validator raising ValueError
            found.append((f"{where} {key}", error["msg"]))
    if unknown:
        found.insert(0, (where, f"unknown key(s) {sorted(unknown)}; allowed: {_TABLE_KEYS}"))
    return found


def metric_from_table(name: str, table: Any) -> Metric:
    """One metric from its table as the config would spell it (a metric defined at run time),
    or a ConfigError naming every problem."""
    errors: list[tuple[str, str]] = []
    if name in BUILTIN_METRICS:
        errors.append((f"[metrics.{name}]", f"{name!r} is built in and cannot be redefined"))
    elif not _METRIC_NAME.fullmatch(name):
        errors.append((f"[metrics.{name}]", _METRIC_NAME_RULE))
    found = _metric_from_table(name, table, errors)
    if errors or found is None:
        raise ConfigError(errors)
    return found


def registry_from_mapping(document: Mapping[str, Any]) -> MetricRegistry:
    """The registry of a parsed config, or one ConfigError listing every problem in it."""
    errors: list[tuple[str, str]] = []
    # [pipeline] belongs to the settings (workers.settings), which read the same file.
    unknown = sorted(set(document) - {"pipeline", "metrics"})
    if unknown:
        errors.append(("top level", f"unknown section(s) {unknown}; allowed: pipeline, metrics"))
    metrics: dict[str, Metric] = {
        "comment": Metric(name="comment", type="comment", level="any", description="free text"),
        "demonstration": Metric(
            name="demonstration", type="demonstration", description="a corrected output, any JSON"
        ),
    }
    tables = document.get("metrics", {})
    if not isinstance(tables, Mapping):
        errors.append(("[metrics]", "must be a table of metric tables"))
        tables = {}
    for name, table in tables.items():
        where = f"[metrics.{name}]"
        if name in BUILTIN_METRICS:
            errors.append((where, f"{name!r} is built in and cannot be redefined"))
        elif not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            errors.append((where, _METRIC_NAME_RULE))
        found = _metric_from_table(name, table, errors)
        if found is not None:
            metrics[name] = found
    if errors:
        raise ConfigError(errors)
    return MetricRegistry(metrics=metrics)


def load_registry(path: Path) -> MetricRegistry:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([("", "metric config file not found")], path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], path=path) from None
    try:
        return registry_from_mapping(document)
    except ConfigError as exc:
        raise ConfigError(exc.errors, path=path) from None
