"""Settings precedence, JSON Schema files vs. models, migrations on disk, partition names."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from ingest.wire.json_schema import MODELS, SCHEMA_DIR, rendered_schemas
from workers.postgres.migrate import available_migrations
from workers.postgres.partitions import day_of, partition_name
from workers.settings import ENV_VARS, Settings

# --- settings ---------------------------------------------------------------------------------


def test_defaults_without_env_or_flags() -> None:
    settings = Settings.load(env={})
    assert settings == Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.http_port == 8000
    assert settings.config_path == Path("feedbackflow.toml")
    assert settings.topic_prefix == "feedbackflow"
    assert settings.kafka_idempotence is True


def test_env_overrides_defaults() -> None:
    env = {
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": "kafka:9092",
        "FEEDBACKFLOW_HTTP_PORT": "9100",
        "FEEDBACKFLOW_CONFIG": "/etc/ff.toml",
        "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
    }
    settings = Settings.load(env=env)
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.http_port == 9100
    assert settings.config_path == Path("/etc/ff.toml")
    assert settings.kafka_idempotence is False
    assert settings.database_url == Settings().database_url


def test_flags_override_env() -> None:
    env = {"FEEDBACKFLOW_KAFKA_BOOTSTRAP": "kafka:9092", "FEEDBACKFLOW_HTTP_PORT": "9100"}
    settings = Settings.load(env=env, kafka_bootstrap="flag:9092")
    assert settings.kafka_bootstrap == "flag:9092"
    assert settings.http_port == 9100


def test_none_flags_do_not_override_env() -> None:
    env = {"FEEDBACKFLOW_TOPIC_PREFIX": "staging"}
    settings = Settings.load(env=env, topic_prefix=None, http_port=None)
    assert settings.topic_prefix == "staging"
    assert settings.http_port == 8000


def test_empty_env_var_falls_back_to_default() -> None:
    assert Settings.load(env={"FEEDBACKFLOW_KAFKA_BOOTSTRAP": ""}).kafka_bootstrap == (
        "127.0.0.1:9092"
    )


def test_unrelated_env_vars_are_ignored() -> None:
    assert Settings.load(env={"KAFKA_BOOTSTRAP": "x:1", "HOME": "/root"}) == Settings()


def test_every_field_has_an_env_var() -> None:
    assert set(ENV_VARS) == set(Settings.model_fields)


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_invalid_port_from_env_is_rejected(port: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings.load(env={"FEEDBACKFLOW_HTTP_PORT": port})
    assert [err["loc"] for err in exc.value.errors()] == [("http_port",)]


def test_invalid_port_flag_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings.load(env={}, http_port=65536)


def test_invalid_topic_prefix_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings.load(env={"FEEDBACKFLOW_TOPIC_PREFIX": "has space"})


def test_unknown_flag_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings.load(env={}, kafka_bootstrp="x:1")


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
