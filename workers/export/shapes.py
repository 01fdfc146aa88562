"""What one exported record looks like: a feedback row, a training example, or a chat.

- ``rows``: the current feedback with its value in one ``value`` field (the column its type is
  stored in), its prediction's identity, and with ``--with-prediction`` its inputs and outputs.
- ``examples``: one per prediction, ``{prediction_id, application, model, inputs, outputs}``:
  for a boolean metric the predictions rated positive (TensorZero's curated datasets of well-rated
  inferences); for ``demonstration`` the corrected output in place of the model's.
- ``messages``: the examples as chat fine-tuning data, ``{"messages": [...]}``, where inputs hold
  ``messages`` (and maybe a ``system`` text) and outputs an assistant reply; other predictions
  are skipped and counted.

Nothing here varies between runs (no ingestion or resolution times): exports of the same data,
however it came in, are the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

Shape = Literal["rows", "examples", "messages"]
SHAPES: tuple[Shape, ...] = ("rows", "examples", "messages")

ROW_FIELDS = (
    "feedback_id",
    "ts",
    "metric",
    "target_kind",
    "target",
    "value",
    "error_code",
    "error_message",
    "rationale",
    "source_type",
    "source_id",
    "tags",
    "metadata",
    "status",
    "status_reason",
    "prediction_id",
    "application",
    "model",
    "prediction_ts",
    "delay_seconds",
)
PREDICTION_FIELDS = ("episode_id", "inputs", "outputs", "prediction_tags")
EXAMPLE_FIELDS = ("prediction_id", "application", "model", "inputs", "outputs")
MESSAGE_FIELDS = ("messages",)


class NotChat(ValueError):
    """The prediction's inputs or outputs are not chat messages."""


def fields_of(shape: Shape, with_predictions: bool) -> tuple[str, ...]:
    if shape == "rows":
        return ROW_FIELDS + (PREDICTION_FIELDS if with_predictions else ())
    return EXAMPLE_FIELDS if shape == "examples" else MESSAGE_FIELDS


def feedback_value(row: Mapping[str, Any]) -> Any:
    """The value from the column its metric's type is stored in."""
    for column in ("value_bool", "value_float", "value_text", "value_json"):
        if row[column] is not None:
            return row[column]
    return None


def as_row(row: Mapping[str, Any], with_predictions: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields_of("rows", with_predictions):
        value = feedback_value(row) if name == "value" else row[_COLUMN.get(name, name)]
        out[name] = _plain(value)
    return out


def as_example(row: Mapping[str, Any]) -> dict[str, Any]:
    outputs = row["outputs"]
    if row["metric"] == "demonstration":
        outputs = _demonstrated(outputs, row["value_json"])
    return {
        "prediction_id": str(row["prediction_id"]),
        "application": row["application"],
        "model": row["model"],
        "inputs": row["inputs"],
        "outputs": outputs,
    }


def as_messages(row: Mapping[str, Any]) -> dict[str, Any]:
    example = as_example(row)
    inputs, outputs = example["inputs"] or {}, example["outputs"] or {}
    messages = inputs.get("messages")
    if not isinstance(messages, list) or not all(_is_message(m) for m in messages):
        raise NotChat("inputs have no list of chat messages")
    chat: list[Any] = []
    if isinstance(inputs.get("system"), str):
        chat.append({"role": "system", "content": inputs["system"]})
    chat.extend(messages)
    chat.extend(_assistant(outputs))
    return {"messages": chat}


_COLUMN = {"target": "join_key"}


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _demonstrated(outputs: Any, demonstration: Any) -> Any:
    """The correction in place of the model's output: an object replaces the outputs; another
    value replaces the outputs' only member, if they have one, else is their ``content``."""
    if isinstance(demonstration, dict):
        return demonstration
    if isinstance(outputs, dict) and len(outputs) == 1:
        return {next(iter(outputs)): demonstration}
    return {"content": demonstration}


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str) and "content" in value


def _assistant(outputs: Mapping[str, Any]) -> list[Any]:
    given = outputs.get("messages")
    if isinstance(given, list) and all(_is_message(m) for m in given):
        return given
    message = outputs.get("message")
    if _is_message(message):
        return [message]
    content = outputs.get("content")
    if content is None and len(outputs) == 1:
        content = next(iter(outputs.values()))
    if isinstance(content, str | list):
        return [{"role": "assistant", "content": content}]
    raise NotChat("outputs hold no assistant message (messages, message or content)")
