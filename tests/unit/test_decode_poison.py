"""What valid JSON may carry that Postgres or the contract cannot: a dead letter naming the
field, never a window that fails for ever or a value lost without a word."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ingest.metrics.registry import registry_from_mapping
from tests.unit.test_decode import NOW, PREDICTION_ID, TOPICS, feedback, only_dead_letter, record
from workers.stream.decode import Decoder

DECODER = Decoder(
    registry_from_mapping(
        {"metrics": {"thumbs_up": {"type": "boolean"}, "structured": {"type": "json"}}}
    ),
    TOPICS,
    timedelta(days=90),
)
PID = str(PREDICTION_ID)
TS = '"timestamp": "2025-11-24T15:00:00Z"'


def _prediction(body: str) -> bytes:
    return f'{{"prediction_id": "{PID}", "application": "a", {TS}, {body}}}'.encode()


def _decode_prediction(raw: bytes) -> tuple[int, str, str]:
    batch = DECODER.decode([record(TOPICS.predictions, raw)], NOW)
    if batch.dead_letters:
        dead = batch.dead_letters[0]
        return 0, dead.error_field, dead.reason
    return len(batch.predictions), "", ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('"inputs": {"x": NaN}', "inputs.x"),
        ('"inputs": {"x": Infinity}', "inputs.x"),
        ('"outputs": {"y": [1, {"z": -Infinity}]}', "outputs.y[1].z"),
        ('"outputs": {"big": 1e400}', "outputs.big"),
    ],
)
def test_a_number_postgres_cannot_store_is_a_dead_letter_naming_it(body: str, field: str) -> None:
    stored, where, reason = _decode_prediction(_prediction(body))
    assert (stored, where) == (0, field)
    assert "not a finite number" in reason


@pytest.mark.parametrize("metric", ["structured", "demonstration"])
def test_a_non_finite_number_in_a_json_value_is_a_dead_letter(metric: str) -> None:
    raw = feedback(metric=metric, value={"score": 1.0}).copy()
    payload = record(TOPICS.feedback, raw).value
    assert payload is not None
    poisoned = payload.replace(b'"score": 1.0', b'"score": NaN')
    dead = only_dead_letter(DECODER.decode([record(TOPICS.feedback, poisoned)], NOW))
    assert dead.error_field == "value.score"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (
            f'{{"prediction_id": "{PID}", "prediction_id": "{PID}", "application": "a", {TS}}}',
            "prediction_id",
        ),
        (
            f'{{"prediction_id":"{PID}","application":"a","application":"b",{TS}}}'.replace(
                '": "', '":"'
            ),
            "application",
        ),
        (_prediction('"inputs": {"q": 1, "q": 2}'), "q"),
        (_prediction('"tags": {"env": "a", "env": "b"}'), "env"),
        # Spaced before the colon, the cheap count misses the members: the precise look runs.
        (
            f'{{"prediction_id" : "{PID}", "application" : "a", "application" : "b", {TS}}}',
            "application",
        ),
    ],
)
def test_a_duplicate_key_is_a_dead_letter_naming_the_key(raw: str | bytes, key: str) -> None:
    payload = raw.encode() if isinstance(raw, str) else raw
    stored, where, reason = _decode_prediction(payload)
    assert (stored, where) == (0, key)
    assert "duplicate key" in reason


def test_a_duplicate_key_in_feedback_is_a_dead_letter() -> None:
    payload = record(TOPICS.feedback, feedback()).value
    assert payload is not None
    doubled = payload.replace(b'"value": true', b'"value": true, "value": false')
    dead = only_dead_letter(DECODER.decode([record(TOPICS.feedback, doubled)], NOW))
    assert dead.error_field == "value"


@pytest.mark.parametrize(
    "body",
    [
        '"inputs": {"text": "NaN and Infinity are words here"}',
        '"outputs": {"quote": "he said \\":\\" twice", "n": 1.5e300}',
        '"inputs": {"nested": {"a": {"b": [1, 2, {"c": "d"}]}}}',
    ],
)
def test_what_only_looks_like_poison_is_stored(body: str) -> None:
    assert _decode_prediction(_prediction(body)) == (1, "", "")


def test_pretty_printed_json_is_stored() -> None:
    raw = _prediction('"inputs": {\n  "a" : 1,\n  "b" : [1, 2]\n}').replace(b", ", b",\n  ")
    assert _decode_prediction(raw) == (1, "", "")
