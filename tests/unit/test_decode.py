"""Decoder: Kafka records in, rows or dead letters out; a bad record never stops the batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from ingest.metrics.registry import MetricRegistry, registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.stream.decode import (
    DeadLetter,
    DecodedBatch,
    Decoder,
    FeedbackRow,
    PredictionRow,
    as_time,
    micros,
)
from workers.testing.traffic import Record

TOPICS = TopicNames("test")
NOW = datetime(2025, 11, 24, 16, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
EVENT_TIME = datetime(2025, 11, 24, 15, tzinfo=UTC)
PREDICTION_ID = uuid7(int(EVENT_TIME.timestamp() * 1000))
EPISODE_ID = UUID("4f1c2a7e-9b3d-4c5e-8f00-000000000001")


def record(
    topic: str,
    value: bytes | dict[str, Any] | None,
    *,
    offset: int = 0,
    partition: int = 0,
    timestamp_ms: int = NOW_MS - 1000,
    key: bytes | None = b"k",
) -> Record:
    payload = json.dumps(value).encode() if isinstance(value, dict) else value
    return Record(topic, partition, offset, timestamp_ms, key, payload)


def prediction(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "prediction_id": str(PREDICTION_ID),
        "application": "generate_haiku",
        "inputs": {"topic": "autumn", "n": 3},
        "outputs": {"text": "léaves fall"},
        "timestamp": "2025-11-24T15:00:00Z",
    }
    event.update(overrides)
    return event


def feedback(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "feedback_id": str(uuid7(NOW_MS)),
        "metric": "thumbs_up",
        "prediction_id": str(PREDICTION_ID),
        "value": True,
        "timestamp": "2025-11-24T15:30:00Z",
    }
    event.update(overrides)
    return event


@pytest.fixture
def registry() -> MetricRegistry:
    return registry_from_mapping(
        {
            "metrics": {
                "thumbs_up": {"type": "boolean"},
                "score": {"type": "float", "min": 0, "max": 1},
                "task_success": {"type": "boolean", "level": "episode"},
                "structured": {"type": "json"},
            }
        }
    )


@pytest.fixture
def decoder(registry: MetricRegistry) -> Decoder:
    return Decoder(registry, TOPICS, timedelta(days=90))


def only_dead_letter(batch: DecodedBatch) -> DeadLetter:
    assert batch.predictions == []
    assert batch.feedback == []
    assert len(batch.dead_letters) == 1
    return batch.dead_letters[0]


def only_feedback(batch: DecodedBatch) -> FeedbackRow:
    assert batch.dead_letters == []
    assert len(batch.feedback) == 1
    return batch.feedback[0]


# --- predictions ------------------------------------------------------------------------------


def test_valid_prediction_becomes_a_row_with_json_text(decoder: Decoder) -> None:
    batch = decoder.decode([record(TOPICS.predictions, prediction(tags={"env": "prod"}))], NOW)
    assert batch.feedback == []
    assert batch.dead_letters == []
    assert batch.predictions == [
        PredictionRow(
            prediction_id=PREDICTION_ID,
            join_key=None,  # the default, the id as text: spelled by Postgres
            ts=micros(datetime(2025, 11, 24, 15, tzinfo=UTC)),
            episode_id=None,
            application="generate_haiku",
            model=None,
            inputs='{"topic":"autumn","n":3}',
            outputs='{"text":"léaves fall"}',
            tags='{"env":"prod"}',
            ingested_at=micros(NOW),
        )
    ]
    row = batch.predictions[0]
    assert json.loads(row.inputs) == {"topic": "autumn", "n": 3}


def test_prediction_explicit_join_key_and_episode_are_kept(decoder: Decoder) -> None:
    batch = decoder.decode(
        [
            record(
                TOPICS.predictions,
                prediction(join_key="req-42", episode_id=str(EPISODE_ID), model="v2"),
            )
        ],
        NOW,
    )
    (row,) = batch.predictions
    assert row.join_key == "req-42"
    assert row.episode_id == EPISODE_ID
    assert row.model == "v2"


def test_missing_timestamp_falls_back_to_kafka_record_timestamp(decoder: Decoder) -> None:
    event = prediction()
    del event["timestamp"]
    kafka_ms = NOW_MS - 60_000
    batch = decoder.decode([record(TOPICS.predictions, event, timestamp_ms=kafka_ms)], NOW)
    (row,) = batch.predictions
    assert as_time(row.ts) == NOW - timedelta(minutes=1)


def test_missing_feedback_timestamp_falls_back_to_kafka_record_timestamp(
    decoder: Decoder,
) -> None:
    event = feedback()
    del event["timestamp"]
    batch = decoder.decode([record(TOPICS.feedback, event, timestamp_ms=NOW_MS - 5000)], NOW)
    assert as_time(only_feedback(batch).ts) == NOW - timedelta(seconds=5)


# --- feedback ---------------------------------------------------------------------------------


def test_valid_boolean_feedback_becomes_a_row(decoder: Decoder) -> None:
    event = feedback(
        rationale="good",
        source={"type": "human", "id": "ann"},
        tags={"env": "prod"},
        metadata={"run": "r1"},
    )
    row = only_feedback(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert row.feedback_id == UUID(event["feedback_id"])
    assert as_time(row.ts) == datetime(2025, 11, 24, 15, 30, tzinfo=UTC)
    assert row.metric == "thumbs_up"
    assert row.metric_type == "boolean"
    assert row.target_prediction_id == PREDICTION_ID
    assert row.target_join_key is None
    assert row.target_episode_id is None
    assert row.value_bool is True
    assert row.value_float is None
    assert row.value_text is None
    assert row.value_json is None
    assert row.error_code is None
    assert row.error_message is None
    assert row.rationale == "good"
    assert row.source_type == "human"
    assert row.source_id == "ann"
    assert row.tags == '{"env":"prod"}'
    assert row.metadata == '{"run":"r1"}'
    assert row.ingested_at == micros(NOW)


def test_uuid7_prediction_target_fills_target_id_time(decoder: Decoder) -> None:
    made_at_ms = NOW_MS - 3_600_000
    prediction_id = uuid7(made_at_ms)
    event = feedback(prediction_id=str(prediction_id))
    row = only_feedback(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert row.target_id_time is not None
    assert as_time(row.target_id_time) == NOW - timedelta(hours=1)


def test_non_uuid7_prediction_target_has_no_target_id_time(decoder: Decoder) -> None:
    event = feedback(prediction_id="4f1c2a7e-9b3d-4c5e-8f00-000000000002")
    assert (
        only_feedback(decoder.decode([record(TOPICS.feedback, event)], NOW)).target_id_time is None
    )


def test_join_key_target_row_uses_the_key(decoder: Decoder) -> None:
    event = feedback(join_key="req-42", value=0.5, metric="score")
    del event["prediction_id"]
    row = only_feedback(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert row.target_join_key == "req-42"
    assert row.target_prediction_id is None
    assert row.target_id_time is None
    assert row.value_float == 0.5


def test_episode_target_row(decoder: Decoder) -> None:
    event = feedback(episode_id=str(EPISODE_ID), metric="task_success")
    del event["prediction_id"]
    row = only_feedback(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert row.target_episode_id == EPISODE_ID
    assert row.target_prediction_id is None
    assert row.target_join_key is None


def test_comment_and_json_values_go_to_text_and_json_columns(decoder: Decoder) -> None:
    comment = feedback(metric="comment", value="lovely")
    structured = feedback(metric="structured", value={"a": [1, "é"]})
    batch = decoder.decode(
        [record(TOPICS.feedback, comment, offset=0), record(TOPICS.feedback, structured, offset=1)],
        NOW,
    )
    assert batch.dead_letters == []
    assert batch.feedback[0].value_text == "lovely"
    assert batch.feedback[0].metric_type == "comment"
    assert batch.feedback[1].value_json == '{"a":[1,"é"]}'


def test_error_outcome_fills_error_columns(decoder: Decoder) -> None:
    event = feedback(error={"code": "timeout", "message": "judge timed out"})
    del event["value"]
    row = only_feedback(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert row.error_code == "timeout"
    assert row.error_message == "judge timed out"
    assert row.value_bool is None


def test_a_retraction_is_a_row_with_no_value_and_no_error(decoder: Decoder) -> None:
    event = feedback(retracted=True, source={"type": "human", "id": "annotator-1"})
    del event["value"]
    row = only_feedback(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert (row.value_bool, row.value_float, row.value_text, row.value_json) == (None,) * 4
    assert (row.error_code, row.source_id) == (None, "annotator-1")


def test_a_retraction_without_a_source_id_is_dead_lettered(decoder: Decoder) -> None:
    event = feedback(retracted=True, source={"type": "human"})
    del event["value"]
    dead = only_dead_letter(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert "a retraction needs source.id" in dead.reason


def test_a_retraction_with_a_value_is_dead_lettered(decoder: Decoder) -> None:
    event = feedback(retracted=True, source={"type": "human", "id": "a"})
    dead = only_dead_letter(decoder.decode([record(TOPICS.feedback, event)], NOW))
    assert "exactly one of value, error and retracted" in dead.reason


# --- dead letters -----------------------------------------------------------------------------


def test_bad_json_is_dead_lettered_with_original_bytes(decoder: Decoder) -> None:
    raw = b'{"prediction_id": oops'
    dead = only_dead_letter(
        decoder.decode([record(TOPICS.predictions, raw, offset=7, partition=2)], NOW)
    )
    assert dead.error_field == "(payload)"
    assert "invalid JSON" in dead.reason
    assert dead.payload == raw
    assert dead.topic == TOPICS.predictions
    assert dead.kafka_partition == 2
    assert dead.kafka_offset == 7
    assert dead.kafka_ts == NOW - timedelta(seconds=1)
    assert dead.message_key == b"k"
    assert dead.received_at == NOW


def test_unknown_metric_is_dead_lettered_on_metric(decoder: Decoder) -> None:
    dead = only_dead_letter(
        decoder.decode([record(TOPICS.feedback, feedback(metric="thumbsup"))], NOW)
    )
    assert dead.error_field == "metric"
    assert "'thumbsup'" in dead.reason


def test_wrong_value_type_is_dead_lettered_on_value(decoder: Decoder) -> None:
    dead = only_dead_letter(decoder.decode([record(TOPICS.feedback, feedback(value=1))], NOW))
    assert dead.error_field == "value"
    assert "boolean" in dead.reason


def test_value_out_of_bounds_is_dead_lettered_on_value(decoder: Decoder) -> None:
    dead = only_dead_letter(
        decoder.decode([record(TOPICS.feedback, feedback(metric="score", value=2))], NOW)
    )
    assert dead.error_field == "value"
    assert "above max" in dead.reason


def test_wrong_target_for_level_is_dead_lettered_on_the_target_kind(decoder: Decoder) -> None:
    episode_metric_on_prediction = feedback(metric="task_success")
    prediction_metric_on_episode = feedback(episode_id=str(EPISODE_ID))
    del prediction_metric_on_episode["prediction_id"]
    batch = decoder.decode(
        [
            record(TOPICS.feedback, episode_metric_on_prediction, offset=0),
            record(TOPICS.feedback, prediction_metric_on_episode, offset=1),
        ],
        NOW,
    )
    assert batch.feedback == []
    assert [d.error_field for d in batch.dead_letters] == ["prediction_id", "episode_id"]


def test_wire_error_is_dead_lettered_on_the_field(decoder: Decoder) -> None:
    dead = only_dead_letter(decoder.decode([record(TOPICS.feedback, feedback(rationle="x"))], NOW))
    assert dead.error_field == "rationle"


def test_tombstone_is_dead_lettered_with_empty_payload(decoder: Decoder) -> None:
    dead = only_dead_letter(decoder.decode([record(TOPICS.feedback, None)], NOW))
    assert dead.error_field == "(payload)"
    assert "tombstone" in dead.reason
    assert dead.payload == b""


def test_record_from_another_topic_is_dead_lettered(decoder: Decoder) -> None:
    dead = only_dead_letter(decoder.decode([record("other.topic", prediction())], NOW))
    assert dead.error_field == "(topic)"


def test_timestamp_older_than_retention_is_dead_lettered(decoder: Decoder) -> None:
    old = (NOW - timedelta(days=91)).isoformat()
    batch = decoder.decode(
        [
            record(TOPICS.predictions, prediction(timestamp=old), offset=0),
            record(TOPICS.feedback, feedback(timestamp=old), offset=1),
        ],
        NOW,
    )
    assert batch.predictions == []
    assert batch.feedback == []
    assert [d.error_field for d in batch.dead_letters] == ["timestamp", "timestamp"]
    assert "older than the 90d retention" in batch.dead_letters[0].reason


def test_timestamp_just_inside_retention_is_kept(decoder: Decoder) -> None:
    recent = NOW - timedelta(days=89)
    event = prediction(
        timestamp=recent.isoformat(), prediction_id=str(uuid7(int(recent.timestamp() * 1000)))
    )
    batch = decoder.decode([record(TOPICS.predictions, event)], NOW)
    assert len(batch.predictions) == 1


def test_timestamp_more_than_a_day_in_future_is_dead_lettered(decoder: Decoder) -> None:
    future = (NOW + timedelta(days=1, minutes=1)).isoformat()
    dead = only_dead_letter(
        decoder.decode([record(TOPICS.feedback, feedback(timestamp=future))], NOW)
    )
    assert dead.error_field == "timestamp"
    assert "in the future" in dead.reason


def test_timestamp_less_than_a_day_in_future_is_kept(decoder: Decoder) -> None:
    future = (NOW + timedelta(hours=23)).isoformat()
    batch = decoder.decode([record(TOPICS.feedback, feedback(timestamp=future))], NOW)
    assert len(batch.feedback) == 1


def test_bad_record_between_good_ones_does_not_stop_them(decoder: Decoder) -> None:
    first = uuid7(NOW_MS - 2)
    last = uuid7(NOW_MS - 1)
    records = [
        record(TOPICS.predictions, prediction(prediction_id=str(first)), offset=10, partition=3),
        record(TOPICS.predictions, b"not json", offset=11, partition=3),
        record(TOPICS.predictions, prediction(prediction_id=str(last)), offset=12, partition=3),
    ]
    batch = decoder.decode(records, NOW)
    assert [row.prediction_id for row in batch.predictions] == [first, last]
    (dead,) = batch.dead_letters
    assert (dead.kafka_partition, dead.kafka_offset) == (3, 11)


def test_interleaved_topics_keep_their_order(decoder: Decoder) -> None:
    ids = [uuid7(NOW_MS - n) for n in range(3)]
    records = [
        record(TOPICS.feedback, feedback(feedback_id=str(ids[0])), offset=0),
        record(TOPICS.predictions, prediction(), offset=0),
        record(TOPICS.feedback, feedback(value="yes"), offset=1),
        record(TOPICS.feedback, feedback(feedback_id=str(ids[2])), offset=2),
    ]
    batch = decoder.decode(records, NOW)
    assert [row.feedback_id for row in batch.feedback] == [ids[0], ids[2]]
    assert len(batch.predictions) == 1
    assert [(d.topic, d.kafka_offset) for d in batch.dead_letters] == [(TOPICS.feedback, 1)]


def test_out_of_range_epoch_timestamp_is_dead_lettered_not_raised(decoder: Decoder) -> None:
    # One producer's garbage number must not crash the whole batch (and stall the partition).
    good = record(TOPICS.predictions, prediction(), offset=0)
    bad = record(TOPICS.predictions, prediction(timestamp=10**20), offset=1)
    batch = decoder.decode([good, bad], NOW)
    assert len(batch.predictions) == 1
    assert [(d.error_field, d.kafka_offset) for d in batch.dead_letters] == [("timestamp", 1)]


def test_wrongly_typed_timestamp_dead_letter_says_what_was_sent(decoder: Decoder) -> None:
    batch = decoder.decode([record(TOPICS.predictions, prediction(timestamp=True))], NOW)
    [dead] = batch.dead_letters
    assert dead.error_field == "timestamp"
    assert dead.reason == "timestamp: Input should be a valid datetime, got a boolean"


def test_epoch_milliseconds_are_not_guessed_as_seconds_when_decoding(decoder: Decoder) -> None:
    # 1,764,000,000 would be November 2025 in seconds; as milliseconds it is January 1970,
    # older than the retention: a dead letter, not a silently reinterpreted time.
    batch = decoder.decode([record(TOPICS.predictions, prediction(timestamp=1_764_000_000))], NOW)
    [dead] = batch.dead_letters
    assert dead.error_field == "timestamp"
    assert "1970-01-21" in dead.reason


def test_oversized_integer_float_value_is_dead_lettered_not_raised(decoder: Decoder) -> None:
    raw = json.dumps(feedback(metric="score", value=0)).replace(
        '"value": 0', '"value": 1' + "0" * 400
    )
    good = record(TOPICS.feedback, feedback(metric="score", value=0.5), offset=0)
    bad = record(TOPICS.feedback, raw.encode(), offset=1)
    batch = decoder.decode([good, bad], NOW)
    assert len(batch.feedback) == 1
    assert [(d.error_field, d.kafka_offset) for d in batch.dead_letters] == [("value", 1)]


def test_uuid7_prediction_id_far_from_its_timestamp_is_dead_lettered(decoder: Decoder) -> None:
    stale_id = uuid7(int((EVENT_TIME - timedelta(days=3)).timestamp() * 1000))
    batch = decoder.decode(
        [record(TOPICS.predictions, prediction(prediction_id=str(stale_id)))], NOW
    )
    assert batch.predictions == []
    (dead,) = batch.dead_letters
    assert dead.error_field == "prediction_id"
    assert "more than a day from timestamp" in dead.reason


def test_uuid4_prediction_id_may_carry_any_timestamp(decoder: Decoder) -> None:
    batch = decoder.decode(
        [record(TOPICS.predictions, prediction(prediction_id=str(uuid4())))], NOW
    )
    assert batch.dead_letters == []
    assert len(batch.predictions) == 1


# --- what Postgres cannot store -----------------------------------------------------------------


def test_a_nul_character_anywhere_is_a_dead_letter_naming_where(decoder: Decoder) -> None:
    cases = [
        (TOPICS.predictions, prediction(outputs={"text": ["ok", "a\u0000b"]}), "outputs.text[1]"),
        (TOPICS.predictions, prediction(tags={"k\u0000": "v"}), "tags.k\\u0000"),
        (TOPICS.feedback, feedback(metadata={"m": "\u0000"}), "metadata.m"),
    ]
    for topic, event, where in cases:
        dead = only_dead_letter(decoder.decode([record(topic, event)], NOW))
        assert dead.error_field == where
        assert "NUL character" in dead.reason
        assert "\x00" not in dead.error_field + dead.reason  # storable in the dead letter too


def test_an_escaped_backslash_before_u0000_is_just_text(decoder: Decoder) -> None:
    event = prediction(outputs={"text": "a\\u0000b"})  # the six characters \u0000
    (row,) = decoder.decode([record(TOPICS.predictions, event)], NOW).predictions
    assert json.loads(row.outputs) == {"text": "a\\u0000b"}


def test_a_predictions_own_feedback_becomes_joined_feedback_rows_at_its_time(
    decoder: Decoder,
) -> None:
    event = prediction(feedback={"thumbs_up": True, "structured": {"ok": [1, 2]}})
    batch = decoder.decode([record(TOPICS.predictions, event)], NOW)
    assert batch.dead_letters == []
    assert len(batch.predictions) == 1
    rows = {row.metric: row for row in batch.feedback}
    assert set(rows) == {"thumbs_up", "structured"}
    thumbs = rows["thumbs_up"]
    assert (thumbs.target_prediction_id, thumbs.value_bool) == (PREDICTION_ID, True)
    assert thumbs.ts == micros(EVENT_TIME)
    assert thumbs.target_id_time == micros(EVENT_TIME)
    assert rows["structured"].value_json == '{"ok":[1,2]}'
    assert thumbs.feedback_id.version == 7
    assert thumbs.feedback_id.int >> 80 == int(EVENT_TIME.timestamp() * 1000)
    # The same prediction decoded again (a replay, a retried send) gives the same ids.
    again = decoder.decode([record(TOPICS.predictions, event)], NOW)
    assert {row.feedback_id for row in again.feedback} == {
        row.feedback_id for row in batch.feedback
    }
    assert rows["structured"].feedback_id != thumbs.feedback_id


@pytest.mark.parametrize(
    ("embedded", "field", "words"),
    [
        ({"nope": True}, "feedback.nope", "unknown metric"),
        ({"thumbs_up": "yes"}, "feedback.thumbs_up", "boolean"),
        ({"task_success": True}, "feedback.task_success", "episode-level"),
    ],
)
def test_a_bad_embedded_feedback_dead_letters_the_prediction_naming_it(
    decoder: Decoder, embedded: dict[str, Any], field: str, words: str
) -> None:
    dead = only_dead_letter(
        decoder.decode([record(TOPICS.predictions, prediction(feedback=embedded))], NOW)
    )
    assert dead.error_field == field
    assert words in dead.reason


def test_a_key_given_twice_inside_embedded_feedback_is_caught(decoder: Decoder) -> None:
    raw = json.dumps(prediction(feedback={"structured": {"a": 1}})).replace(
        '{"a": 1}', '{"a": 1, "a": 2}'
    )
    dead = only_dead_letter(decoder.decode([record(TOPICS.predictions, raw.encode())], NOW))
    assert dead.error_field == "a"
