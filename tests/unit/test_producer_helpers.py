"""Producer helpers: UUIDv7 ids and the validating event builders."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from ingest.metrics.registry import FieldError, registry_from_mapping
from ingest.sdk.producer import build_feedback, build_prediction, uuid7
from ingest.wire.events import Feedback, Prediction

MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def test_uuid7_has_version_7_and_rfc_variant() -> None:
    value = uuid7(MS)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_uuid7_embeds_the_given_milliseconds() -> None:
    assert uuid7(MS).int >> 80 == MS


def test_uuid7_defaults_to_current_time() -> None:
    before = int(time.time() * 1000)
    value = uuid7()
    after = int(time.time() * 1000)
    assert before <= value.int >> 80 <= after


def test_uuid7_ids_sort_by_time() -> None:
    ids = [uuid7(MS + step) for step in (0, 1, 2, 1000, 86_400_000)]
    assert sorted(ids) == ids
    assert sorted(str(i) for i in ids) == [str(i) for i in ids]


def test_uuid7_is_random_within_one_millisecond() -> None:
    ids = {uuid7(MS) for _ in range(100)}
    assert len(ids) == 100
    assert all(value.int >> 80 == MS for value in ids)


def test_uuid7_keeps_only_48_bits_of_time() -> None:
    assert uuid7((1 << 48) + 5).int >> 80 == 5


def test_build_prediction_fills_id_and_timestamp() -> None:
    before = datetime.now(UTC)
    event = build_prediction(application="generate_haiku", inputs={"topic": "autumn"})
    assert isinstance(event, Prediction)
    assert event.prediction_id.version == 7
    assert event.timestamp is not None
    assert before <= event.timestamp <= datetime.now(UTC)
    assert event.inputs == {"topic": "autumn"}


def test_build_prediction_keeps_given_id() -> None:
    given = uuid7(MS)
    assert build_prediction(application="a", prediction_id=given).prediction_id == given


def test_build_prediction_error_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^invalid prediction: application: "):
        build_prediction(application="")


def test_build_prediction_unknown_field_is_named() -> None:
    with pytest.raises(ValueError, match="outptus"):
        build_prediction(application="a", outptus={})


def test_build_prediction_raises_plain_value_error_not_pydantic() -> None:
    with pytest.raises(ValueError, match="timestamp") as exc:
        build_prediction(application="a", timestamp="2025-11-24T16:00:00")
    assert type(exc.value) is ValueError
    assert "timestamp" in str(exc.value)


def test_build_feedback_fills_id_and_timestamp() -> None:
    event = build_feedback(metric="comment", join_key="req-1", value="nice")
    assert isinstance(event, Feedback)
    assert event.feedback_id.version == 7
    assert event.timestamp is not None


def test_build_feedback_error_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"invalid feedback: source\.type: "):
        build_feedback(metric="comment", join_key="k", value="x", source={"type": "robot"})


def test_build_feedback_missing_target_is_reported() -> None:
    with pytest.raises(ValueError, match="found: none"):
        build_feedback(metric="comment", value="x")


def test_build_feedback_with_registry_rejects_unknown_metric() -> None:
    registry = registry_from_mapping({"metrics": {"thumbs_up": {"type": "boolean"}}})
    with pytest.raises(FieldError) as exc:
        build_feedback(registry, metric="thumbsup", join_key="k", value=True)
    assert exc.value.field == "metric"
    assert "'thumbsup'" in exc.value.reason


def test_build_feedback_with_registry_rejects_wrong_value_type() -> None:
    registry = registry_from_mapping({"metrics": {"thumbs_up": {"type": "boolean"}}})
    with pytest.raises(ValueError, match=r"^value: "):
        build_feedback(registry, metric="thumbs_up", join_key="k", value="yes")


def test_build_feedback_with_registry_accepts_valid_event() -> None:
    registry = registry_from_mapping({"metrics": {"thumbs_up": {"type": "boolean"}}})
    event = build_feedback(registry, metric="thumbs_up", join_key="k", value=False)
    assert event.value is False


def test_build_feedback_without_registry_does_not_check_metric() -> None:
    event = build_feedback(metric="no_such_metric", join_key="k", value=1)
    assert event.metric == "no_such_metric"


def test_build_prediction_mints_its_uuid7_at_a_backfilled_timestamp() -> None:
    when = datetime(2025, 6, 1, 12, tzinfo=UTC)
    event = build_prediction(application="generate_haiku", timestamp=when)
    assert event.prediction_id.version == 7
    assert event.prediction_id.int >> 80 == int(when.timestamp() * 1000)


def test_build_prediction_with_an_unparseable_timestamp_names_the_field() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        build_prediction(application="generate_haiku", timestamp="yesterday")
