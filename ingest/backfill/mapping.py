"""From a file's columns to wire format v1: the column mapping, constants, and typing text.

A file rarely names things as the wire format does.  ``--map FIELD=COLUMN`` (or the
``[backfill.columns]`` table of a TOML file) says which column holds which wire field; a dotted
field puts a column inside an object (``inputs.question=prompt``, ``source.id=annotator``).
``--set FIELD=VALUE`` gives every row the same value (``metric=haiku_rating``).  Columns that
are neither mapped nor ignored are passed on under their own names, so a column nobody thought
about is an error naming it (the wire format rejects unknown fields), never silently dropped.

CSV holds only text: a value there is typed the way the field needs it (JSON objects for
``inputs`` and the like, epoch milliseconds for a numeric ``timestamp``, the metric's type for
``value``); an empty cell is an absent field.  JSONL and Parquet values keep their own types.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from ingest.backfill.sources import Values
from ingest.metrics.registry import FieldError, MetricRegistry

Kind = Literal["prediction", "feedback"]
KindChoice = Literal["prediction", "feedback", "auto"]
# In a file of both kinds, the column that may say which a row is (else: a row with a metric
# is feedback).
KIND_COLUMN = "kind"
_OBJECT_FIELDS = frozenset({"inputs", "outputs", "tags", "metadata", "source", "error", "feedback"})
_TRUE, _FALSE = frozenset({"true", "1", "yes", "t", "y"}), frozenset({"false", "0", "no", "f", "n"})


class MappingError(ValueError):
    """The mapping itself is wrong (a flag or the TOML table): no row could be read with it."""


@dataclass(frozen=True)
class ColumnMapping:
    columns: Mapping[str, str] = field(default_factory=dict)  # wire field (dotted) -> column
    constants: Mapping[str, Any] = field(default_factory=dict)  # wire field (dotted) -> value
    ignored: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        maps: Iterable[str] = (),
        sets: Iterable[str] = (),
        ignored: Iterable[str] = (),
        toml_file: Path | None = None,
    ) -> ColumnMapping:
        """Flags over the TOML file's ``[backfill]`` table (``columns``, ``set``, ``ignore``)."""
        columns: dict[str, str] = {}
        constants: dict[str, Any] = {}
        ignore = set(ignored)
        if toml_file is not None:
            table = _backfill_table(toml_file)
            columns.update(_strings(table.get("columns", {}), f"{toml_file}: backfill.columns"))
            constants.update(_table(table.get("set", {}), f"{toml_file}: backfill.set"))
            ignore.update(_names(table.get("ignore", []), f"{toml_file}: backfill.ignore"))
        columns.update(_pairs(maps, "--map", "FIELD=COLUMN"))
        constants.update(_pairs(sets, "--set", "FIELD=VALUE"))
        return cls(columns, constants, frozenset(ignore))

    def to_wire(
        self, row: Mapping[str, Any], values: Values, kind: KindChoice, registry: MetricRegistry
    ) -> tuple[Kind, dict[str, Any]]:
        """The row as a wire event of its kind; FieldError naming the column at fault.  A
        missing value (null, or an empty CSV cell) is an absent field."""
        if values == "text":
            row = {name: value for name, value in row.items() if value != ""}
        taken = self.taken
        event: dict[str, Any] = {}
        for name, value in row.items():
            if name not in taken and value is not None:
                event[name] = value
        for wire_field, column in self.columns.items():
            if row.get(column) is not None:
                _place(event, wire_field, row[column])
        for wire_field, value in self.constants.items():
            _place(event, wire_field, value)
        chosen = _kind_of(row, event, kind)
        if values == "text":
            event = _typed(event, registry)
        return chosen, event

    @cached_property
    def taken(self) -> frozenset[str]:
        """Columns that are not passed on under their own names."""
        return frozenset(self.columns.values()) | self.ignored | {KIND_COLUMN}


_TABLE_KEYS = ("columns", "set", "ignore")


def _backfill_table(path: Path) -> Mapping[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"{path}: {exc}") from None
    table = document.get("backfill", {})
    if not isinstance(table, dict):
        raise MappingError(f"{path}: backfill must be a table")
    for key in table:
        if key not in _TABLE_KEYS:
            # A misspelt key would otherwise leave every column unmapped, silently.
            raise MappingError(
                f"{path}: backfill.{key}: unknown key; expected one of {', '.join(_TABLE_KEYS)}"
            )
    return table


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MappingError(f"{where}: must be a table of field = value")
    return value


def _strings(value: object, where: str) -> dict[str, str]:
    table = _table(value, where)
    for wire_field, column in table.items():
        if not isinstance(column, str):
            raise MappingError(
                f"{where}.{wire_field}: {column!r} is not a column name; "
                f'write {wire_field} = "column"'
            )
    return dict(table)


def _names(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MappingError(f'{where}: must be a list of column names (["a", "b"])')
    return value


def _pairs(items: Iterable[str], flag: str, shape: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise MappingError(f"{flag} {item!r}: expected {shape}")
        pairs[name] = value
    return pairs


def _place(event: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``event[a][b]`` for ``a.b``; a missing object on the way is made."""
    *parents, last = dotted.split(".")
    target = event
    for name in parents:
        inner = target.get(name)
        if not isinstance(inner, dict):
            inner = {}
            target[name] = inner
        target = inner
    target[last] = value


def _kind_of(row: Mapping[str, Any], event: Mapping[str, Any], kind: KindChoice) -> Kind:
    if kind != "auto":
        return kind
    said = row.get(KIND_COLUMN)
    if said in (None, ""):
        return "feedback" if "metric" in event else "prediction"
    if said in ("prediction", "feedback"):
        return "prediction" if said == "prediction" else "feedback"
    raise FieldError(KIND_COLUMN, f"is {said!r}; expected 'prediction' or 'feedback'")


def _typed(event: dict[str, Any], registry: MetricRegistry) -> dict[str, Any]:
    """CSV's text typed as each field needs; what cannot be typed is left as text, for the
    decoder to name."""
    for name in _OBJECT_FIELDS & event.keys():
        event[name] = _json_or_text(event[name])
    timestamp = event.get("timestamp")
    if isinstance(timestamp, str) and timestamp.isdigit():
        event["timestamp"] = int(timestamp)
    value = event.get("value")
    if isinstance(value, str):
        metric = registry.metrics.get(str(event.get("metric")))
        event["value"] = _typed_value(value, metric.type if metric else None)
    return event


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _typed_value(text: str, metric_type: str | None) -> Any:
    if metric_type == "boolean":
        lowered = text.strip().lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    if metric_type == "float":
        try:
            return float(text)
        except ValueError:
            return text
    if metric_type in ("json", "demonstration"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text  # a demonstration may be plain text
    return text
