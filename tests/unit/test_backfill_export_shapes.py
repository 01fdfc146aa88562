"""Export's pure parts: the training shapes and the current-value statement's parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from workers.export.shapes import NotChat, as_example, as_messages
from workers.read_model.current_feedback import FeedbackFilter, current_feedback_sql


def _row(metric: str, value_json: Any, inputs: Any, outputs: Any) -> dict[str, Any]:
    return {
        "metric": metric,
        "value_json": value_json,
        "prediction_id": "p",
        "application": "a",
        "model": "m",
        "inputs": inputs,
        "outputs": outputs,
    }


def test_a_demonstration_replaces_the_outputs_or_their_only_member() -> None:
    def demonstrated(value: Any, outputs: Any) -> Any:
        return as_example(_row("demonstration", value, {}, outputs))["outputs"]

    assert demonstrated({"haiku": "new"}, {"haiku": "old", "x": 1}) == {"haiku": "new"}
    assert demonstrated("new", {"haiku": "old"}) == {"haiku": "new"}
    assert demonstrated("new", {"a": 1, "b": 2}) == {"content": "new"}
    # A rating keeps the model's outputs.
    assert as_example(_row("haiku_rating", None, {}, {"haiku": "old"}))["outputs"] == {
        "haiku": "old"
    }


def test_chat_messages_from_inputs_and_the_assistant_reply() -> None:
    inputs = {"system": "s", "messages": [{"role": "user", "content": "q"}]}
    for outputs, reply in (
        ({"content": "r"}, [{"role": "assistant", "content": "r"}]),
        (
            {"message": {"role": "assistant", "content": "r"}},
            [{"role": "assistant", "content": "r"}],
        ),
        ({"text": "r"}, [{"role": "assistant", "content": "r"}]),
    ):
        chat = as_messages(_row("haiku_rating", None, inputs, outputs))["messages"]
        assert chat == [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            *reply,
        ]
    with pytest.raises(NotChat, match="inputs"):
        as_messages(_row("haiku_rating", None, {"prompt": "q"}, {"content": "r"}))
    with pytest.raises(NotChat, match="outputs"):
        as_messages(_row("haiku_rating", None, inputs, {"a": 1, "b": 2}))


def test_the_revision_key_filters_apply_before_the_current_value_and_the_rest_after() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    sql, args = current_feedback_sql(
        FeedbackFilter(metrics=["m"], as_of=at, models=["x"], since=at, tags={"k": "v"}),
        with_predictions=False,
        limit=5,
    )
    inner, outer = sql.split("ORDER BY target_kind", 1)
    assert "metric = ANY($1::text[])" in inner
    assert "ts <= $2" in inner
    assert "c.model = ANY($3::text[])" in outer
    assert "c.ts >= $4" in outer
    assert "p.tags @> $5::jsonb" in outer
    assert "LEFT JOIN feedbackflow.predictions p" in outer  # tags need the prediction
    assert outer.endswith("LIMIT $6")
    assert args == [["m"], at, ["x"], at, '{"k": "v"}', 5]
