"""The metric config (``feedbackflow.toml``): which metrics exist, their types and levels.

Like TensorZero's ``[metrics.*]``: a feedback names a metric, and the metric decides what its value
may be and what it may target.  The config is checked whole at start-up so that a typo fails the
process with the metric's name and the problem, instead of dead-lettering every event later.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jsonschema
from jsonschema.protocols import Validator

from ingest.wire.events import Feedback, TargetKind

MetricType = Literal["boolean", "float", "categorical", "comment", "demonstration", "json"]
Level = Literal["prediction", "episode"]
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
LEVEL_TARGETS: dict[Level, frozenset[TargetKind]] = {
    "prediction": frozenset({"prediction_id", "join_key"}),
    "episode": frozenset({"episode_id"}),
}


class ConfigError(ValueError):
    """The config file is unusable; the message names the section and the problem."""


class TypedValue(NamedTuple):
    """A feedback value sorted into the column its type is stored in.

    A tuple, built without a Python-level constructor where it is built per event (a frozen
    dataclass cost 0.5 of the 0.95 us that checking a feedback took)."""

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
    _validator: Validator | None = field(default=None, compare=False, repr=False)

    def typed_value(self, value: Any) -> TypedValue:
        """Check ``value`` against the metric; raise ValueError saying why it does not fit."""
        match self.type:
            case "boolean":
                if not isinstance(value, bool):
                    raise ValueError(f"metric {self.name!r} is boolean; got {_kind(value)}")
                return _TRUE if value else _FALSE
            case "float":
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
                return _new(TypedValue, (None, number, None, None))
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
                if self._validator is not None:
                    error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
                    if error is not None:
                        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                        raise ValueError(
                            f"metric {self.name!r}: value at {where} does not match its schema: "
                            f"{error.message}"
                        )
                return _new(TypedValue, (None, None, None, value))
        raise AssertionError(self.type)  # pragma: no cover - exhaustive match


@dataclass(frozen=True)
class PipelineConfig:
    window: timedelta = timedelta(minutes=5)
    retention: timedelta = timedelta(days=90)
    max_window_events: int = 50_000
    # Windows written at once (1 or 2), each on its own Postgres connection.  Memory holds the
    # filling window plus these; two let Postgres use two cores while the worker decodes.
    windows_in_flight: int = 2


@dataclass(frozen=True)
class MetricRegistry:
    """Every metric a feedback may name, built-ins included."""

    metrics: Mapping[str, Metric]
    pipeline: PipelineConfig = PipelineConfig()

    def check(self, feedback: Feedback) -> tuple[Metric, TypedValue]:
        """The metric and typed value of a wire-valid feedback, or ValueError naming the field."""
        metric = self.metrics.get(feedback.metric)
        if metric is None:
            known = ", ".join(sorted(self.metrics))
            raise FieldError("metric", f"unknown metric {feedback.metric!r} (known: {known})")
        allowed = LEVEL_TARGETS[metric.level]
        if feedback.target_kind not in allowed:
            raise FieldError(
                feedback.target_kind,
                f"metric {metric.name!r} is {metric.level}-level and takes "
                f"{' or '.join(sorted(allowed))}, not {feedback.target_kind}",
            )
        if feedback.error is not None:
            return metric, NO_VALUE
        try:
            return metric, metric.typed_value(feedback.value)
        except ValueError as exc:
            raise FieldError("value", str(exc)) from None


class FieldError(ValueError):
    """A semantic error in one field of an event."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__.replace("dict", "object")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, where: str) -> timedelta:
    """``"5m"``, ``"1s"``, ``"90d"``, ``"250ms"``; ``where`` names the setting in errors."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{where}: {text!r} is not a duration like '5m', '1s', '90d' or '250ms'")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{where}: duration must be positive, got {text!r}")
    return timedelta(seconds=seconds)


def _metric_from_table(name: str, table: Mapping[str, Any]) -> Metric:
    where = f"[metrics.{name}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    known = {"type", "level", "optimize", "min", "max", "categories", "schema", "description"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    mtype = table.get("type")
    if mtype not in METRIC_TYPES:
        raise ConfigError(f"{where} type: must be one of {list(METRIC_TYPES)}, got {mtype!r}")
    level = _LEVEL_ALIASES.get(str(table.get("level", "prediction")))
    if level is None:
        raise ConfigError(
            f"{where} level: must be prediction (alias inference) or episode, "
            f"got {table.get('level')!r}"
        )
    optimize = table.get("optimize", "max")
    if optimize not in ("max", "min"):
        raise ConfigError(f"{where} optimize: must be 'max' or 'min', got {optimize!r}")
    minimum, maximum = table.get("min"), table.get("max")
    for key, bound in (("min", minimum), ("max", maximum)):
        if bound is not None and (
            mtype != "float" or isinstance(bound, bool) or not isinstance(bound, int | float)
        ):
            raise ConfigError(f"{where} {key}: only a float metric takes numeric bounds")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ConfigError(f"{where}: min {minimum} is greater than max {maximum}")
    categories = table.get("categories")
    if mtype == "categorical":
        if (
            not isinstance(categories, list)
            or not categories
            or not all(isinstance(c, str) for c in categories)
        ):
            raise ConfigError(f"{where} categories: a categorical metric needs a list of strings")
        if len(set(categories)) != len(categories):
            raise ConfigError(f"{where} categories: duplicates in {categories}")
    elif categories is not None:
        raise ConfigError(f"{where} categories: only a categorical metric takes categories")
    schema = table.get("schema")
    validator: Validator | None = None
    if schema is not None:
        if mtype != "json":
            raise ConfigError(f"{where} schema: only a json metric takes a schema")
        if not isinstance(schema, Mapping):
            raise ConfigError(f"{where} schema: must be a JSON Schema object")
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(dict(schema))
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"{where} schema: not a valid JSON Schema: {exc.message}") from None
        validator = cls(dict(schema))
    return Metric(
        name=name,
        type=mtype,
        level=level,
        optimize=optimize,
        minimum=None if minimum is None else float(minimum),
        maximum=None if maximum is None else float(maximum),
        categories=tuple(categories or ()),
        json_schema=schema,
        _validator=validator,
    )


def registry_from_mapping(document: Mapping[str, Any]) -> MetricRegistry:
    unknown = sorted(set(document) - {"pipeline", "metrics"})
    if unknown:
        raise ConfigError(f"unknown top-level section(s) {unknown}; allowed: pipeline, metrics")
    pipeline_table = document.get("pipeline", {})
    extra = sorted(
        set(pipeline_table) - {"window", "retention", "max_window_events", "windows_in_flight"}
    )
    if extra:
        raise ConfigError(f"[pipeline]: unknown key(s) {extra}")
    pipeline = PipelineConfig(
        window=parse_duration(pipeline_table.get("window", "5m"), where="[pipeline] window"),
        retention=parse_duration(
            pipeline_table.get("retention", "90d"), where="[pipeline] retention"
        ),
        max_window_events=_positive_int(
            pipeline_table.get("max_window_events", 50_000), "[pipeline] max_window_events"
        ),
        windows_in_flight=_windows_in_flight(pipeline_table.get("windows_in_flight", 2)),
    )
    metrics: dict[str, Metric] = {
        "comment": Metric(name="comment", type="comment"),
        "demonstration": Metric(name="demonstration", type="demonstration"),
    }
    for name, table in document.get("metrics", {}).items():
        if name in BUILTIN_METRICS:
            raise ConfigError(f"[metrics.{name}]: {name!r} is built in and cannot be redefined")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}", name):
            raise ConfigError(f"[metrics.{name}]: a metric name is letters, digits, _ . -")
        metrics[name] = _metric_from_table(name, table)
    return MetricRegistry(metrics=metrics, pipeline=pipeline)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: must be a positive whole number, got {value!r}")
    return value


def _windows_in_flight(value: Any) -> int:
    if value not in (1, 2) or isinstance(value, bool):
        raise ConfigError(
            f"[pipeline] windows_in_flight: must be 1 or 2, got {value!r} (the worker drops "
            "duplicate ids of the window before it, the only one that may be uncommitted)"
        )
    return int(value)


def load_registry(path: Path) -> MetricRegistry:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: metric config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return registry_from_mapping(document)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
