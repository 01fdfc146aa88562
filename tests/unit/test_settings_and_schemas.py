"""Settings precedence, JSON Schema files vs. models, migrations on disk, partition names."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from ingest.wire.json_schema import MODELS, SCHEMA_DIR, rendered_schemas
from workers.devstack.dev import dev_banner
from workers.postgres.migrate import available_migrations
from workers.postgres.partitions import day_of, partition_name
from workers.settings import PipelineSettings, Settings, describe_duration, parse_duration

# --- settings ---------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No FEEDBACKFLOW_* variables, and a working directory without a feedbackflow.toml."""
    for name in list(os.environ):
        if name.startswith("FEEDBACKFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_without_env_or_flags(env: pytest.MonkeyPatch) -> None:
    settings = Settings.load()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.http_port == 8000
    assert settings.config == Path("feedbackflow.toml")
    assert settings.topic_prefix == "feedbackflow"
    assert settings.kafka_idempotence == "auto"
    assert settings.pipeline == PipelineSettings()
    assert settings.pipeline.window == timedelta(minutes=5)
    assert settings.pipeline.retention == timedelta(days=90)


def test_env_overrides_defaults(env: pytest.MonkeyPatch) -> None:
    env.setenv("FEEDBACKFLOW_KAFKA_BOOTSTRAP", "kafka:9092")
    env.setenv("FEEDBACKFLOW_HTTP_PORT", "9100")
    env.setenv("FEEDBACKFLOW_CONFIG", "/etc/ff.toml")
    env.setenv("FEEDBACKFLOW_KAFKA_IDEMPOTENCE", "false")
    settings = Settings.load()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.http_port == 9100
    assert settings.config == Path("/etc/ff.toml")
    assert settings.kafka_idempotence is False
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/postgres"


def test_flags_override_env(env: pytest.MonkeyPatch) -> None:
    env.setenv("FEEDBACKFLOW_KAFKA_BOOTSTRAP", "kafka:9092")
    env.setenv("FEEDBACKFLOW_HTTP_PORT", "9100")
    settings = Settings.load(kafka_bootstrap="flag:9092")
    assert settings.kafka_bootstrap == "flag:9092"
    assert settings.http_port == 9100


def test_none_flags_do_not_override_env(env: pytest.MonkeyPatch) -> None:
    env.setenv("FEEDBACKFLOW_TOPIC_PREFIX", "staging")
    settings = Settings.load(topic_prefix=None, http_port=None)
    assert settings.topic_prefix == "staging"
    assert settings.http_port == 8000


def test_empty_env_var_falls_back_to_default(env: pytest.MonkeyPatch) -> None:
    env.setenv("FEEDBACKFLOW_KAFKA_BOOTSTRAP", "")
    assert Settings.load().kafka_bootstrap == "127.0.0.1:9092"


def test_unrelated_env_vars_are_ignored(env: pytest.MonkeyPatch) -> None:
    env.setenv("KAFKA_BOOTSTRAP", "x:1")
    assert Settings.load().kafka_bootstrap == "127.0.0.1:9092"


def test_what_the_user_chose_is_told_apart_from_defaults(env: pytest.MonkeyPatch) -> None:
    """``feedbackflow dev`` starts a server only for what the user did not name."""
    env.setenv("FEEDBACKFLOW_DATABASE_URL", "postgresql://db/x")
    chosen = Settings.load(kafka_bootstrap="k:1").model_fields_set
    assert {"database_url", "kafka_bootstrap"} <= chosen
    assert "http_port" not in chosen


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_invalid_port_from_env_is_rejected(env: pytest.MonkeyPatch, port: str) -> None:
    env.setenv("FEEDBACKFLOW_HTTP_PORT", port)
    with pytest.raises(ValidationError) as exc:
        Settings.load()
    assert [err["loc"] for err in exc.value.errors()] == [("http_port",)]


def test_invalid_port_flag_is_rejected(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Settings.load(http_port=65536)


def test_invalid_topic_prefix_is_rejected(env: pytest.MonkeyPatch) -> None:
    env.setenv("FEEDBACKFLOW_TOPIC_PREFIX", "has space")
    with pytest.raises(ValidationError):
        Settings.load()


def test_unknown_flag_is_rejected(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Settings.load(kafka_bootstrp="x:1")


PIPELINE_FILE = """
[pipeline]
window = "1s"
max_window_events = 1000
windows_in_flight = 1

[metrics.thumbs]
type = "boolean"
"""


def test_the_config_files_pipeline_table_is_read(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "feedbackflow.toml").write_text(PIPELINE_FILE)
    pipeline = Settings.load().pipeline
    assert pipeline.window == timedelta(seconds=1)
    assert pipeline.max_window_events == 1000
    assert pipeline.windows_in_flight == 1
    assert pipeline.retention == timedelta(days=90)  # not in the file: the default


def test_the_config_file_named_by_the_environment_is_read(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    named = tmp_path / "elsewhere.toml"
    named.write_text(PIPELINE_FILE)
    env.setenv("FEEDBACKFLOW_CONFIG", str(named))
    assert Settings.load().pipeline.max_window_events == 1000


def test_a_nested_env_var_overrides_one_key_of_the_files_table(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "feedbackflow.toml").write_text(PIPELINE_FILE)
    env.setenv("FEEDBACKFLOW_PIPELINE__WINDOW", "250ms")
    pipeline = Settings.load().pipeline
    assert pipeline.window == timedelta(milliseconds=250)
    assert pipeline.max_window_events == 1000  # the rest of the file's table stays


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1s", timedelta(seconds=1)),
        ("90d", timedelta(days=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_durations_are_read_with_their_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["5", "5x", "ninety days", "0s", "-1m", 5])
def test_a_bad_duration_is_refused_with_what_was_given(text: object) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_duration(text)


def test_pipeline_errors_are_all_reported_with_their_location(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "feedbackflow.toml").write_text(
        '[pipeline]\nwindow = "5x"\nmax_window_events = 0\nwindows_in_flight = 3\nwindw = "1s"\n'
    )
    with pytest.raises(ValidationError) as exc:
        Settings.load()
    assert {err["loc"] for err in exc.value.errors()} == {
        ("pipeline", "window"),
        ("pipeline", "max_window_events"),
        ("pipeline", "windows_in_flight"),
        ("pipeline", "windw"),
    }


def test_the_hold_back_waits_a_window_but_never_less_than_its_minimum() -> None:
    assert PipelineSettings(window="1s").hold_back_seconds == 30.0
    assert PipelineSettings(window="5m").hold_back_seconds == 300.0


# --- JSON Schema files ------------------------------------------------------------------------


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return loaded


def test_schema_files_match_the_models() -> None:
    rendered = rendered_schemas()
    assert set(rendered) == set(MODELS) == {"prediction.v1.json", "feedback.v1.json"}
    for name, text in rendered.items():
        on_disk = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert on_disk == text, f"{name} is stale; run `feedbackflow schemas`"


@pytest.mark.parametrize("name", ["prediction.v1.json", "feedback.v1.json"])
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    document = schema(name)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(document)


def test_sample_prediction_validates_against_schema_file() -> None:
    validator = jsonschema.Draft202012Validator(schema("prediction.v1.json"))
    sample = {
        "prediction_id": "0190f3a1-2b3c-7d4e-8f00-112233445566",
        "application": "generate_haiku",
        "inputs": {"topic": "autumn"},
        "outputs": {"text": "leaves fall"},
        "tags": {"env": "prod"},
        "timestamp": 1764000000000,
    }
    assert list(validator.iter_errors(sample)) == []


def test_sample_feedback_validates_against_schema_file() -> None:
    validator = jsonschema.Draft202012Validator(schema("feedback.v1.json"))
    sample = {
        "feedback_id": "0190f3a1-2b3c-7d4e-8f00-aabbccddeeff",
        "metric": "thumbs_up",
        "join_key": "req-42",
        "value": True,
        "source": {"type": "human", "id": "ann"},
        "timestamp": "2025-11-24T16:00:00Z",
    }
    assert list(validator.iter_errors(sample)) == []


def test_schema_file_rejects_unknown_field_like_the_model() -> None:
    validator = jsonschema.Draft202012Validator(schema("feedback.v1.json"))
    sample = {
        "feedback_id": "0190f3a1-2b3c-7d4e-8f00-aabbccddeeff",
        "metric": "thumbs_up",
        "join_key": "req-42",
        "value": True,
        "rationle": "typo",
    }
    assert [e.validator for e in validator.iter_errors(sample)] == ["additionalProperties"]


def test_schema_file_rejects_nested_tags() -> None:
    validator = jsonschema.Draft202012Validator(schema("prediction.v1.json"))
    sample = {
        "prediction_id": "0190f3a1-2b3c-7d4e-8f00-112233445566",
        "application": "a",
        "tags": {"env": {"region": "eu"}},
    }
    errors = list(validator.iter_errors(sample))
    assert errors
    assert list(errors[0].absolute_path) == ["tags", "env"]


# --- migrations -------------------------------------------------------------------------------


def test_migrations_are_ordered_and_start_at_version_1() -> None:
    migrations = available_migrations()
    assert migrations
    versions = [m.version for m in migrations]
    assert versions[0] == 1
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert versions == list(range(1, len(versions) + 1))


def test_migrations_have_names_and_sql() -> None:
    first = available_migrations()[0]
    assert first.name == "schema"
    assert "CREATE" in first.sql.upper()


# --- partitions -------------------------------------------------------------------------------


def test_partition_name_carries_the_day() -> None:
    assert partition_name("predictions", date(2026, 11, 25)) == "predictions_p20261125"
    assert partition_name("dead_letters", date(2025, 1, 5)) == "dead_letters_p20250105"


def test_day_of_is_the_utc_day() -> None:
    late_evening_new_york = datetime(2025, 11, 24, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert day_of(late_evening_new_york) == date(2025, 11, 25)
    early_morning_tokyo = datetime(2025, 11, 25, 3, 0, tzinfo=timezone(timedelta(hours=9)))
    assert day_of(early_morning_tokyo) == date(2025, 11, 24)
    assert day_of(datetime(2025, 11, 24, 23, 59, 59, tzinfo=UTC)) == date(2025, 11, 24)


@pytest.mark.parametrize(
    ("spelled", "described"),
    [("5m", "5m"), ("90d", "90d"), ("1s", "1s"), ("250ms", "250ms"), ("90s", "90s"), ("1h", "1h")],
)
def test_a_duration_is_described_as_it_is_spelled(spelled: str, described: str) -> None:
    assert describe_duration(parse_duration(spelled)) == described


def test_the_dev_banner_states_the_window_length(env: pytest.MonkeyPatch) -> None:
    """`feedbackflow dev` with the repository's 5-minute windows seemed to do nothing."""
    live = Settings.load(pipeline=PipelineSettings(window="5m"))
    banner = dev_banner(live, 8000)
    assert "Windows of 5m: what you send lands in Postgres when its window closes" in banner
    assert "FEEDBACKFLOW_TOPIC_PREFIX=feedbackflow" in banner
