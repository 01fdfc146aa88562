"""The metric config: metric types, levels, and start-up errors that name the metric."""

from __future__ import annotations

import pickle
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ingest.metrics.registry import (
    ConfigError,
    FieldError,
    Metric,
    MetricRegistry,
    TypedValue,
    load_registry,
    registry_from_mapping,
)
from ingest.wire.events import Feedback

PREDICTION_ID = "0190f3a1-2b3c-7d4e-8f00-112233445566"
EPISODE_ID = "0190f3a1-2b3c-7d4e-8f00-000000000001"
FEEDBACK_ID = "0190f3a1-2b3c-7d4e-8f00-aabbccddeeff"

CONFIG = """
[pipeline]
window = "1s"
retention = "90d"
max_window_events = 1000

[metrics.thumbs_up]
type = "boolean"
description = "the end user liked the answer"

[metrics.score]
type = "float"
min = 0
max = 1
optimize = "max"

[metrics.label]
type = "categorical"
categories = ["good", "bad"]

[metrics.task_success]
type = "boolean"
level = "episode"

[metrics.latency_ok]
type = "boolean"
level = "inference"

[metrics.structured]
type = "json"

[metrics.structured.schema]
type = "object"
required = ["items"]
properties = { items = { type = "array", items = { type = "integer" } } }

[metrics.anything]
type = "json"
"""


def metric(table: dict[str, Any], name: str = "m") -> Metric:
    return registry_from_mapping({"metrics": {name: table}}).metrics[name]


def config_error(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        registry_from_mapping(document)
    return str(exc.value)


def feedback_event(metric_name: str, value: Any = True, **target: str) -> Feedback:
    event: dict[str, Any] = {"feedback_id": FEEDBACK_ID, "metric": metric_name, "value": value}
    event.update(target or {"prediction_id": PREDICTION_ID})
    return Feedback.model_validate(event)


@pytest.fixture
def registry(tmp_path: Path) -> MetricRegistry:
    path = tmp_path / "feedbackflow.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_registry(path)


# --- loading ----------------------------------------------------------------------------------


def test_load_registry_reads_the_metrics(registry: MetricRegistry) -> None:
    assert set(registry.metrics) == {
        "comment",
        "demonstration",
        "thumbs_up",
        "score",
        "label",
        "task_success",
        "latency_ok",
        "structured",
        "anything",
    }


def test_pipeline_table_is_left_to_the_settings() -> None:
    # The same file configures the worker; its [pipeline] keys are not the registry's to judge.
    registry = registry_from_mapping(
        {"pipeline": {"window": "1s", "windw": 5}, "metrics": {"ok": {"type": "boolean"}}}
    )
    assert set(registry.metrics) == {"comment", "demonstration", "ok"}
    assert not hasattr(registry, "pipeline")


def test_description_is_read_from_the_table(registry: MetricRegistry) -> None:
    assert registry.metrics["thumbs_up"].description == "the end user liked the answer"
    assert registry.metrics["score"].description is None


def test_builtins_are_described() -> None:
    builtins = registry_from_mapping({}).metrics
    assert builtins["comment"].description
    assert builtins["demonstration"].description


def test_description_must_be_a_string() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "description": 3}}})
    assert message == "[metrics.score] description: must be a string, got a number"


def test_builtin_comment_and_demonstration_exist_without_config() -> None:
    registry = registry_from_mapping({})
    assert set(registry.metrics) == {"comment", "demonstration"}
    assert registry.metrics["comment"].type == "comment"
    assert registry.metrics["demonstration"].type == "demonstration"


def test_float_bounds_are_stored_as_floats(registry: MetricRegistry) -> None:
    score = registry.metrics["score"]
    assert score.minimum == 0.0
    assert score.maximum == 1.0
    assert isinstance(score.minimum, float)


def test_level_alias_inference_means_prediction(registry: MetricRegistry) -> None:
    assert registry.metrics["latency_ok"].level == "prediction"
    assert metric({"type": "boolean", "level": "inference"}) == metric(
        {"type": "boolean", "level": "prediction"}
    )


def test_level_defaults_to_prediction() -> None:
    assert metric({"type": "boolean"}).level == "prediction"


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as exc:
        load_registry(path)
    assert str(path) in str(exc.value)
    assert "not found" in str(exc.value)


def test_invalid_toml_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[metrics.score\ntype = 'float'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_registry(path)
    assert str(path) in str(exc.value)
    assert "not valid TOML" in str(exc.value)


def test_bad_metric_in_file_error_names_path_and_metric(tmp_path: Path) -> None:
    path = tmp_path / "feedbackflow.toml"
    path.write_text('[metrics.score]\ntype = "percent"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_registry(path)
    assert str(path) in str(exc.value)
    assert "[metrics.score]" in str(exc.value)
    assert "percent" in str(exc.value)


# --- config errors ----------------------------------------------------------------------------


def test_unknown_metric_type_names_metric_and_type() -> None:
    message = config_error({"metrics": {"score": {"type": "percent"}}})
    assert "[metrics.score] type" in message
    assert "'percent'" in message


def test_missing_metric_type_is_rejected() -> None:
    message = config_error({"metrics": {"score": {}}})
    assert "[metrics.score] type" in message
    assert "None" in message


def test_bad_level_names_metric_and_level() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "level": "session"}}})
    assert "[metrics.score] level" in message
    assert "'session'" in message


def test_bad_optimize_names_metric() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "optimize": "up"}}})
    assert "[metrics.score] optimize" in message


def test_min_greater_than_max_is_rejected() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "min": 5, "max": 1}}})
    assert "[metrics.score]" in message
    assert "min 5 is greater than max 1" in message


def test_bounds_on_non_float_metric_are_rejected() -> None:
    message = config_error({"metrics": {"ok": {"type": "boolean", "min": 0}}})
    assert "[metrics.ok] min" in message


def test_boolean_bound_is_rejected() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "max": True}}})
    assert "[metrics.score] max" in message


def test_categorical_without_categories_is_rejected() -> None:
    message = config_error({"metrics": {"label": {"type": "categorical"}}})
    assert "[metrics.label] categories" in message
    assert "needs a list of strings" in message


def test_categorical_with_empty_categories_is_rejected() -> None:
    message = config_error({"metrics": {"label": {"type": "categorical", "categories": []}}})
    assert "[metrics.label] categories" in message


def test_categorical_with_duplicate_categories_is_rejected() -> None:
    message = config_error(
        {"metrics": {"label": {"type": "categorical", "categories": ["a", "a"]}}}
    )
    assert "[metrics.label] categories: duplicates" in message


def test_categories_on_non_categorical_metric_are_rejected() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "categories": ["a"]}}})
    assert "[metrics.score] categories" in message
    assert "only a categorical metric" in message


def test_schema_on_non_json_metric_is_rejected() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "schema": {"type": "number"}}}})
    assert "[metrics.score] schema" in message
    assert "only a json metric" in message


def test_invalid_json_schema_is_rejected() -> None:
    message = config_error({"metrics": {"blob": {"type": "json", "schema": {"type": 12}}}})
    assert "[metrics.blob] schema" in message
    assert "not a valid JSON Schema" in message


def test_redefining_builtin_comment_is_rejected() -> None:
    message = config_error({"metrics": {"comment": {"type": "comment"}}})
    assert "[metrics.comment]" in message
    assert "built in" in message


def test_unknown_metric_keys_are_rejected_and_named() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "maximum": 1}}})
    assert "[metrics.score]" in message
    assert "'maximum'" in message


def test_unknown_top_level_section_is_rejected() -> None:
    message = config_error({"metric": {}})
    assert "'metric'" in message


def test_invalid_metric_name_is_rejected() -> None:
    message = config_error({"metrics": {"9lives": {"type": "boolean"}}})
    assert "[metrics.9lives]" in message


def test_unknown_keys_are_listed_with_the_allowed_ones() -> None:
    message = config_error({"metrics": {"score": {"type": "float", "maximum": 1, "mni": 0}}})
    assert message == (
        "[metrics.score]: unknown key(s) ['maximum', 'mni']; allowed: ['categories', "
        "'description', 'level', 'max', 'min', 'optimize', 'schema', 'type']"
    )


# --- every problem at once --------------------------------------------------------------------

SEVERAL_MISTAKES = """
[metrics.stars]
type = "float"
optimize = "up"
min = 5
max = 1

[metrics.tone]
type = "categorical"
categories = ["formal", "formal"]
"""
# Two problems in one table, one of them relating two keys, and one in another table.
SEVERAL_MISTAKES_ERRORS = [
    ("[metrics.stars] optimize", "must be 'max' or 'min', got 'up'"),
    ("[metrics.stars] max", "min 5 is greater than max 1"),
    ("[metrics.tone] categories", "duplicates in ['formal', 'formal']"),
]


def test_every_mistake_is_reported_at_once_with_its_location() -> None:
    with pytest.raises(ConfigError) as exc:
        registry_from_mapping(tomllib.loads(SEVERAL_MISTAKES))
    assert exc.value.errors == SEVERAL_MISTAKES_ERRORS
    assert str(exc.value).splitlines() == [
        f"{location}: {reason}" for location, reason in SEVERAL_MISTAKES_ERRORS
    ]


def test_every_mistake_in_a_file_is_reported_on_a_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "feedbackflow.toml"
    path.write_text(SEVERAL_MISTAKES, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_registry(path)
    assert exc.value.path == path
    assert exc.value.errors == SEVERAL_MISTAKES_ERRORS
    assert str(exc.value).splitlines() == [
        f"{path}: {location}: {reason}" for location, reason in SEVERAL_MISTAKES_ERRORS
    ]


def test_problems_outside_the_tables_are_reported_with_those_inside() -> None:
    with pytest.raises(ConfigError) as exc:
        registry_from_mapping(
            {
                "metric": {},
                "metrics": {
                    "comment": {"type": "comment"},
                    "9lives": {"type": "boolean", "level": "session"},
                    "label": "good",
                },
            }
        )
    assert [location for location, _ in exc.value.errors] == [
        "top level",
        "[metrics.comment]",
        "[metrics.9lives]",
        "[metrics.9lives] level",
        "[metrics.label]",
    ]


def test_unknown_keys_are_reported_with_the_other_mistakes_of_the_table() -> None:
    with pytest.raises(ConfigError) as exc:
        registry_from_mapping({"metrics": {"score": {"type": "float", "mx": 1, "min": "0"}}})
    assert [location for location, _ in exc.value.errors] == [
        "[metrics.score]",
        "[metrics.score] min",
    ]


def test_a_wrong_type_is_not_blamed_on_the_keys_that_depend_on_it() -> None:
    # Which keys a metric takes depends on its type; with the type wrong, only it is reported.
    with pytest.raises(ConfigError) as exc:
        registry_from_mapping(
            {"metrics": {"score": {"type": "percent", "min": 0, "max": 1, "categories": ["a"]}}}
        )
    assert [location for location, _ in exc.value.errors] == ["[metrics.score] type"]


def test_a_wrong_type_does_not_hide_mistakes_that_do_not_depend_on_it() -> None:
    with pytest.raises(ConfigError) as exc:
        registry_from_mapping(
            {"metrics": {"blob": {"type": "jsn", "optimize": "up", "schema": {"type": 12}}}}
        )
    assert [location for location, _ in exc.value.errors] == [
        "[metrics.blob] type",
        "[metrics.blob] optimize",
        "[metrics.blob] schema",
    ]


def test_config_error_survives_pickling() -> None:
    # An exception that crosses a process boundary is pickled; the default rebuilds it from
    # its message, which would lose the structured errors.
    error = ConfigError([("[metrics.a] type", "bad")], Path("feedbackflow.toml"))
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert copy.errors == error.errors
    assert copy.path == error.path
    assert str(copy) == str(error)


# --- typed values -----------------------------------------------------------------------------


def test_boolean_accepts_true_and_false() -> None:
    boolean = metric({"type": "boolean"})
    assert boolean.typed_value(True) == TypedValue(boolean=True)
    assert boolean.typed_value(False) == TypedValue(boolean=False)


def test_boolean_rejects_one() -> None:
    with pytest.raises(ValueError, match="'m' is boolean; got a number"):
        metric({"type": "boolean"}).typed_value(1)


def test_boolean_rejects_string_true() -> None:
    with pytest.raises(ValueError, match="boolean; got a string"):
        metric({"type": "boolean"}).typed_value("true")


def test_float_accepts_ints_and_floats_as_floats() -> None:
    number = metric({"type": "float"})
    assert number.typed_value(3) == TypedValue(number=3.0)
    assert number.typed_value(0.25) == TypedValue(number=0.25)


def test_float_rejects_true() -> None:
    with pytest.raises(ValueError, match="is a number; got a boolean"):
        metric({"type": "float"}).typed_value(True)


def test_float_rejects_null_naming_it() -> None:
    with pytest.raises(ValueError, match="got null"):
        metric({"type": "float"}).typed_value(None)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_float_rejects_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="must be finite"):
        metric({"type": "float"}).typed_value(value)


def test_float_rejects_int_too_large_for_a_float_with_value_error() -> None:
    # JSON integers are unbounded; an oversized one must be a ValueError like any bad value.
    with pytest.raises(ValueError, match="'m'"):
        metric({"type": "float"}).typed_value(10**400)


def test_float_bounds_are_inclusive() -> None:
    score = metric({"type": "float", "min": 0, "max": 1})
    assert score.typed_value(0) == TypedValue(number=0.0)
    assert score.typed_value(1) == TypedValue(number=1.0)


def test_float_below_min_is_rejected() -> None:
    with pytest.raises(ValueError, match="below min 0"):
        metric({"type": "float", "min": 0, "max": 1}).typed_value(-0.5)


def test_float_above_max_is_rejected() -> None:
    with pytest.raises(ValueError, match="above max 1"):
        metric({"type": "float", "min": 0, "max": 1}).typed_value(1.5)


def test_categorical_accepts_listed_category() -> None:
    label = metric({"type": "categorical", "categories": ["good", "bad"]})
    assert label.typed_value("good") == TypedValue(text="good")


def test_categorical_rejects_unlisted_value_listing_categories() -> None:
    label = metric({"type": "categorical", "categories": ["good", "bad"]})
    with pytest.raises(ValueError, match=r"one of \['good', 'bad'\]; got 'meh'"):
        label.typed_value("meh")


def test_categorical_rejects_non_string() -> None:
    label = metric({"type": "categorical", "categories": ["1"]})
    with pytest.raises(ValueError, match="got 1"):
        label.typed_value(1)


def test_comment_accepts_string() -> None:
    comment = registry_from_mapping({}).metrics["comment"]
    assert comment.typed_value("nice") == TypedValue(text="nice")


def test_comment_must_be_a_string() -> None:
    comment = registry_from_mapping({}).metrics["comment"]
    with pytest.raises(ValueError, match="is a comment; got an object"):
        comment.typed_value({"text": "nice"})


@pytest.mark.parametrize("value", ["text", 3, 2.5, True, [1, "a"], {"a": {"b": None}}])
def test_demonstration_accepts_any_json(value: Any) -> None:
    demonstration = registry_from_mapping({}).metrics["demonstration"]
    assert demonstration.typed_value(value) == TypedValue(json=value)


def test_json_without_schema_accepts_anything(registry: MetricRegistry) -> None:
    assert registry.metrics["anything"].typed_value([1, 2]) == TypedValue(json=[1, 2])


def test_json_with_schema_accepts_matching_value(registry: MetricRegistry) -> None:
    value = {"items": [1, 2, 3]}
    assert registry.metrics["structured"].typed_value(value) == TypedValue(json=value)


def test_json_schema_mismatch_reports_the_path(registry: MetricRegistry) -> None:
    with pytest.raises(ValueError, match="value at items/1 does not match its schema") as exc:
        registry.metrics["structured"].typed_value({"items": [1, "two"]})
    assert "'structured'" in str(exc.value)


def test_json_schema_mismatch_at_root_says_root(registry: MetricRegistry) -> None:
    with pytest.raises(ValueError, match=r"value at \(root\)"):
        registry.metrics["structured"].typed_value({"other": 1})


# --- registry.check ---------------------------------------------------------------------------


def test_check_returns_metric_and_typed_value(registry: MetricRegistry) -> None:
    found, value = registry.check(feedback_event("score", 0.5))
    assert found.name == "score"
    assert value == TypedValue(number=0.5)


def test_check_unknown_metric_names_the_metric(registry: MetricRegistry) -> None:
    with pytest.raises(FieldError) as exc:
        registry.check(feedback_event("thumbsup"))
    assert exc.value.field == "metric"
    assert "'thumbsup'" in exc.value.reason
    assert "thumbs_up" in exc.value.reason  # the known ones are listed


def test_episode_metric_rejects_prediction_id_target(registry: MetricRegistry) -> None:
    with pytest.raises(FieldError) as exc:
        registry.check(feedback_event("task_success", prediction_id=PREDICTION_ID))
    assert exc.value.field == "prediction_id"
    assert "episode-level" in exc.value.reason


def test_episode_metric_rejects_join_key_target(registry: MetricRegistry) -> None:
    with pytest.raises(FieldError) as exc:
        registry.check(feedback_event("task_success", join_key="req-1"))
    assert exc.value.field == "join_key"


def test_episode_metric_accepts_episode_id(registry: MetricRegistry) -> None:
    found, value = registry.check(feedback_event("task_success", episode_id=EPISODE_ID))
    assert found.level == "episode"
    assert value == TypedValue(boolean=True)


def test_prediction_metric_rejects_episode_id_target(registry: MetricRegistry) -> None:
    with pytest.raises(FieldError) as exc:
        registry.check(feedback_event("thumbs_up", episode_id=EPISODE_ID))
    assert exc.value.field == "episode_id"
    assert "prediction-level" in exc.value.reason


def test_prediction_metric_accepts_join_key_target(registry: MetricRegistry) -> None:
    _, value = registry.check(feedback_event("thumbs_up", join_key="req-1"))
    assert value == TypedValue(boolean=True)


def test_check_wrong_value_type_is_a_value_field_error(registry: MetricRegistry) -> None:
    with pytest.raises(FieldError) as exc:
        registry.check(feedback_event("thumbs_up", 1))
    assert exc.value.field == "value"
    assert str(exc.value).startswith("value: ")


def test_check_error_outcome_skips_value_typing(registry: MetricRegistry) -> None:
    event = Feedback.model_validate(
        {
            "feedback_id": FEEDBACK_ID,
            "metric": "score",
            "prediction_id": PREDICTION_ID,
            "error": {"code": "timeout", "message": "judge timed out"},
        }
    )
    found, value = registry.check(event)
    assert found.name == "score"
    assert value == TypedValue()


def test_field_error_is_a_value_error() -> None:
    error = FieldError("value", "bad")
    assert isinstance(error, ValueError)
    assert str(error) == "value: bad"
    assert error.field == "value"
    assert error.reason == "bad"
