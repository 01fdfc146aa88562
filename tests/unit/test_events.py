"""Wire models v1: what a producer may put on the predictions and feedback topics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from ingest.wire.events import Feedback, Prediction, error_text

PREDICTION_ID = UUID("0190f3a1-2b3c-7d4e-8f00-112233445566")
FEEDBACK_ID = UUID("0190f3a1-2b3c-7d4e-8f00-aabbccddeeff")
EPISODE_ID = UUID("0190f3a1-2b3c-7d4e-8f00-000000000001")


def prediction(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"prediction_id": str(PREDICTION_ID), "application": "generate_haiku"}
    event.update(overrides)
    return event


def feedback(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "feedback_id": str(FEEDBACK_ID),
        "metric": "thumbs_up",
        "prediction_id": str(PREDICTION_ID),
        "value": True,
    }
    event.update(overrides)
    return event


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in exc.value.errors()]


# --- Prediction -------------------------------------------------------------------------------


def test_minimal_prediction_is_valid_with_empty_defaults() -> None:
    event = Prediction.model_validate(prediction())
    assert event.prediction_id == PREDICTION_ID
    assert event.application == "generate_haiku"
    assert event.join_key is None
    assert event.episode_id is None
    assert event.model is None
    assert event.inputs == {}
    assert event.outputs == {}
    assert event.tags == {}
    assert event.timestamp is None


def test_full_prediction_keeps_every_field() -> None:
    event = Prediction.model_validate(
        prediction(
            join_key="req-42",
            episode_id=str(EPISODE_ID),
            model="haiku-v2",
            inputs={"topic": "autumn", "n": 3, "nested": {"a": [1, None, True]}},
            outputs={"text": "leaves fall"},
            tags={"env": "prod"},
            timestamp="2025-11-24T16:00:00Z",
        )
    )
    assert event.join_key == "req-42"
    assert event.episode_id == EPISODE_ID
    assert event.model == "haiku-v2"
    assert event.inputs == {"topic": "autumn", "n": 3, "nested": {"a": [1, None, True]}}
    assert event.outputs == {"text": "leaves fall"}
    assert event.tags == {"env": "prod"}
    assert event.timestamp == datetime(2025, 11, 24, 16, tzinfo=UTC)


def test_join_key_defaults_to_prediction_id_text() -> None:
    event = Prediction.model_validate(prediction())
    assert event.effective_join_key == str(PREDICTION_ID)


def test_explicit_join_key_is_the_effective_join_key() -> None:
    event = Prediction.model_validate(prediction(join_key="req-42"))
    assert event.effective_join_key == "req-42"


def test_unknown_prediction_field_is_rejected_and_named() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(outptus={"text": "typo"}))
    assert error_fields(exc) == ["outptus"]
    assert exc.value.errors()[0]["type"] == "extra_forbidden"


def test_prediction_without_application_is_rejected_naming_it() -> None:
    event = prediction()
    del event["application"]
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(event)
    assert error_fields(exc) == ["application"]


def test_prediction_id_must_be_a_uuid() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(prediction_id="not-a-uuid"))
    assert error_fields(exc) == ["prediction_id"]


def test_timestamp_accepts_rfc3339_with_offset() -> None:
    event = Prediction.model_validate(prediction(timestamp="2025-11-24T18:00:00+02:00"))
    assert event.timestamp is not None
    assert event.timestamp == datetime(2025, 11, 24, 16, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(hours=2)


def test_timestamp_accepts_aware_datetime_object() -> None:
    when = datetime(2025, 11, 24, 10, tzinfo=timezone(timedelta(hours=-6)))
    event = Prediction.model_validate(prediction(timestamp=when))
    assert event.timestamp == when


def test_epoch_numbers_are_milliseconds_not_seconds() -> None:
    event = Prediction.model_validate(prediction(timestamp=1764000000000))
    assert event.timestamp == datetime(2025, 11, 24, 16, tzinfo=UTC)


def test_small_epoch_number_is_still_read_as_milliseconds() -> None:
    # 1764000000 as *milliseconds* is 20 days after the epoch, not November 2025.
    event = Prediction.model_validate(prediction(timestamp=1764000000))
    assert event.timestamp == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=1764000000)


def test_fractional_epoch_milliseconds_keep_sub_millisecond_precision() -> None:
    event = Prediction.model_validate(prediction(timestamp=1764000000000.5))
    assert event.timestamp == datetime(2025, 11, 24, 16, 0, 0, 500, tzinfo=UTC)


def test_epoch_milliseconds_in_json_payload() -> None:
    raw = f'{{"prediction_id":"{PREDICTION_ID}","application":"a","timestamp":1764000000000}}'
    event = Prediction.model_validate_json(raw)
    assert event.timestamp == datetime(2025, 11, 24, 16, tzinfo=UTC)


def test_naive_datetime_string_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(timestamp="2025-11-24T16:00:00"))
    assert error_fields(exc) == ["timestamp"]


def test_boolean_timestamp_is_rejected_not_read_as_epoch() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(timestamp=True))
    assert error_fields(exc) == ["timestamp"]
    assert "got a boolean" in error_text(exc.value.errors()[0])


def test_nan_timestamp_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(timestamp=float("nan")))
    assert error_fields(exc) == ["timestamp"]


def test_out_of_range_epoch_milliseconds_is_a_validation_error() -> None:
    # A garbage number from a producer must be reported on the field like any other bad value,
    # not escape as OverflowError/OSError from datetime.fromtimestamp.
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(timestamp=10**20))
    assert error_fields(exc) == ["timestamp"]


def test_infinite_epoch_milliseconds_in_json_is_a_validation_error() -> None:
    raw = f'{{"prediction_id":"{PREDICTION_ID}","application":"a","timestamp":1e400}}'
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate_json(raw)
    assert error_fields(exc) == ["timestamp"]


def test_tags_must_be_flat_strings() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(tags={"env": {"region": "eu"}}))
    assert error_fields(exc) == ["tags.env"]


def test_tag_values_must_be_strings_not_numbers() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(tags={"attempt": 3}))
    assert error_fields(exc) == ["tags.attempt"]


def test_empty_application_name_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Prediction.model_validate(prediction(application=""))
    assert error_fields(exc) == ["application"]


def test_prediction_is_frozen() -> None:
    event = Prediction.model_validate(prediction())
    with pytest.raises(ValidationError):
        event.application = "other"  # type: ignore[misc]


# --- Feedback ---------------------------------------------------------------------------------


def test_minimal_feedback_is_valid() -> None:
    event = Feedback.model_validate(feedback())
    assert event.feedback_id == FEEDBACK_ID
    assert event.metric == "thumbs_up"
    assert event.value is True
    assert event.error is None
    assert event.source is None
    assert event.rationale is None
    assert event.tags == {}
    assert event.metadata == {}
    assert event.timestamp is None


def test_full_feedback_keeps_every_field() -> None:
    event = Feedback.model_validate(
        feedback(
            value=0.75,
            rationale="mostly right",
            source={"type": "llm_judge", "id": "judge-1"},
            tags={"env": "prod"},
            metadata={"run": "r1"},
            timestamp=1764000000000,
        )
    )
    assert event.value == 0.75
    assert event.rationale == "mostly right"
    assert event.source is not None
    assert event.source.type == "llm_judge"
    assert event.source.id == "judge-1"
    assert event.tags == {"env": "prod"}
    assert event.metadata == {"run": "r1"}
    assert event.timestamp == datetime(2025, 11, 24, 16, tzinfo=UTC)


def test_unknown_feedback_field_is_rejected_and_named() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(rationle="typo"))
    assert error_fields(exc) == ["rationle"]
    assert exc.value.errors()[0]["type"] == "extra_forbidden"


def test_unknown_field_inside_source_is_rejected_and_named() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(source={"type": "human", "name": "ann"}))
    assert error_fields(exc) == ["source.name"]


def test_feedback_without_target_is_rejected_saying_none_found() -> None:
    event = feedback()
    del event["prediction_id"]
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(event)
    message = exc.value.errors()[0]["msg"]
    assert "exactly one of prediction_id, join_key, episode_id" in message
    assert "found: none" in message


def test_feedback_with_two_targets_is_rejected_listing_them() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(join_key="req-42"))
    assert "found: prediction_id, join_key" in exc.value.errors()[0]["msg"]


def test_feedback_with_three_targets_lists_all_three() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(join_key="req-42", episode_id=str(EPISODE_ID)))
    assert "found: prediction_id, join_key, episode_id" in exc.value.errors()[0]["msg"]


def test_feedback_needs_a_value_or_an_error() -> None:
    event = feedback()
    del event["value"]
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(event)
    assert "exactly one of value, error and retracted" in exc.value.errors()[0]["msg"]


def test_feedback_with_both_value_and_error_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(error={"code": "timeout", "message": "judge timed out"}))
    assert "exactly one of value, error and retracted" in exc.value.errors()[0]["msg"]


def test_feedback_with_error_instead_of_value_is_valid() -> None:
    event = feedback(error={"code": "timeout", "message": "judge timed out"})
    del event["value"]
    parsed = Feedback.model_validate(event)
    assert parsed.value is None
    assert parsed.error is not None
    assert parsed.error.code == "timeout"
    assert parsed.error.message == "judge timed out"


@pytest.mark.parametrize("value", [False, 0, 0.0, "", [], {}])
def test_falsy_values_count_as_a_value(value: object) -> None:
    assert Feedback.model_validate(feedback(value=value)).value == value


def test_feedback_tags_must_be_flat_strings() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(tags={"nested": {"a": "b"}}))
    assert error_fields(exc) == ["tags.nested"]


def test_feedback_metadata_must_be_flat_strings() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(metadata={"nested": ["a"]}))
    assert error_fields(exc) == ["metadata.nested"]


@pytest.mark.parametrize("source_type", ["human", "llm_judge", "code", "end_user"])
def test_source_type_accepts_the_four_kinds(source_type: str) -> None:
    event = Feedback.model_validate(feedback(source={"type": source_type}))
    assert event.source is not None
    assert event.source.type == source_type
    assert event.source.id is None


def test_source_type_outside_the_four_kinds_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(source={"type": "robot"}))
    assert error_fields(exc) == ["source.type"]


def test_prediction_id_target_kind_and_text() -> None:
    event = Feedback.model_validate(feedback())
    assert event.target_kind == "prediction_id"
    assert event.target == str(PREDICTION_ID)


def test_join_key_target_kind_and_text() -> None:
    event = feedback(join_key="req-42")
    del event["prediction_id"]
    parsed = Feedback.model_validate(event)
    assert parsed.target_kind == "join_key"
    assert parsed.target == "req-42"


def test_episode_id_target_kind_and_text() -> None:
    event = feedback(episode_id=str(EPISODE_ID))
    del event["prediction_id"]
    parsed = Feedback.model_validate(event)
    assert parsed.target_kind == "episode_id"
    assert parsed.target == str(EPISODE_ID)


def test_nil_uuid_prediction_id_still_counts_as_a_target() -> None:
    nil = UUID(int=0)
    event = Feedback.model_validate(feedback(prediction_id=str(nil)))
    assert event.target_kind == "prediction_id"
    assert event.target == str(nil)


def test_feedback_naive_timestamp_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Feedback.model_validate(feedback(timestamp="2025-11-24 16:00:00"))
    assert error_fields(exc) == ["timestamp"]
