"""A poison corpus on both topics, listed and generated: each event ends as a dead letter with
its reason or is stored as sent, and valid events after it still flow.

The decoder is the worker's own spec of what is valid; what this proves is that the whole
pipeline (broker, decode, window, Postgres, offsets) agrees with it under every poison: nothing
stops a partition, nothing is lost, and everything is accounted for in Postgres.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.sdk.producer import FeedbackflowProducer, uuid7
from tests.integration.harness import (
    committed_to_the_end,
    count,
    live_pipeline,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker
from workers.stream.decode import Decoder
from workers.testing.traffic import Record

SQL = "'); DROP TABLE feedbackflow.predictions; --"


def _prediction(**fields: object) -> dict[str, object]:
    return {"prediction_id": str(uuid7()), "application": "generate_haiku", **fields}


def _feedback(**fields: object) -> dict[str, object]:
    return {
        "feedback_id": str(uuid.uuid4()),
        "metric": "haiku_rating",
        "join_key": "no-such-prediction",
        "value": True,
        **fields,
    }


def _listed() -> list[tuple[bool, bytes]]:
    """(is feedback, payload) of the listed poisons."""
    pid = str(uuid7())
    items: list[tuple[bool, bytes]] = [
        (False, bytes(range(256))),  # random bytes, invalid UTF-8 among them
        (True, b'{"feedback_id": "' + str(uuid.uuid4()).encode() + b'", "metric": "hai'),
        (False, b'{"prediction_id": "' + pid.encode() + b'", "application": "\xff\xfe"}'),
        (False, b"[" * 100_000 + b"]" * 100_000),  # deep nesting
        (False, b"x" * 1_500_000),  # 1.5 MB of garbage: its dead letter still fits the topic
        (False, json.dumps(_prediction(application="a\u0000b")).encode()),
        (True, json.dumps(_feedback(rationale="why\u0000")).encode()),
        (False, json.dumps(_prediction(prediction_id=SQL)).encode()),
        (True, json.dumps(_feedback(metric=SQL)).encode()),
        (True, json.dumps(_feedback(value="yes")).encode()),  # wrong type
        (True, json.dumps(_feedback(value=None, error=None)).encode()),
        (False, json.dumps(_prediction(timestamp="yesterday")).encode()),
        # Stored as sent: SQL and a 1.5 MB rationale are text like any other.
        (False, json.dumps(_prediction(application=SQL, model=SQL, join_key=SQL)).encode()),
        (True, json.dumps(_feedback(rationale="r" * 1_500_000, join_key=SQL)).encode()),
    ]
    for field in ("inputs", "outputs"):
        for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
            body = json.dumps(_prediction(**{field: {"x": 1}})).replace('"x": 1', f'"x": {literal}')
            items.append((False, body.encode()))
    for literal in ("NaN", "Infinity", "1e400"):
        body = json.dumps(_feedback(metric="judge_verdict", value={"pass": True, "s": 1}))
        items.append((True, body.replace('"s": 1', f'"s": {literal}').encode()))
        body = json.dumps(_feedback(metric="demonstration", value={"s": 1}))
        items.append((True, body.replace('"s": 1', f'"s": {literal}').encode()))
    doubled = json.dumps(_prediction()).replace(
        '"application"', '"application": "x", "application"'
    )
    items.append((False, doubled.encode()))
    items.append(
        (
            True,
            json.dumps(_feedback())
            .replace('"value": true', '"value": true, "value": false')
            .encode(),
        )
    )
    return items


GENERATED: list[tuple[bool, bytes]] = []
JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["prediction_id", "feedback_id", "application", "metric", "value", "inputs", "join_key", "tags"]
)


@settings(
    max_examples=150, database=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(
    feedback=st.booleans(),
    fields=st.dictionaries(FIELDS, JSON, max_size=6),
    noise=st.binary(max_size=64),
    raw=st.booleans(),
)
def _generate(feedback: bool, fields: dict[str, object], noise: bytes, raw: bool) -> None:
    base = _feedback() if feedback else _prediction()
    payload = noise if raw else json.dumps({**base, **fields}, allow_nan=True).encode()
    GENERATED.append((feedback, payload))


async def test_every_poison_is_a_dead_letter_or_stored_and_valid_events_still_flow(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    _generate()
    corpus = _listed() + GENERATED
    async with (
        live_pipeline(kafka.bootstrap, database_url) as live,
        FeedbackflowProducer(
            kafka.bootstrap, topics=live.topics, idempotent=False, max_request_size=4 << 20
        ) as big,
    ):
        decoder = Decoder(live.registry, live.topics, live.settings.pipeline.retention)
        expected_dead = 0
        for offset, (is_feedback, payload) in enumerate(corpus):
            topic = live.topics.feedback if is_feedback else live.topics.predictions
            record = Record(
                topic, 0, offset, int(datetime.now(UTC).timestamp() * 1000), b"p", payload
            )
            expected_dead += bool(decoder.decode([record], datetime.now(UTC)).dead_letters)
            await big.send_raw(topic, b"poison", payload)
        await big.flush()
        # Valid traffic after the corpus, on the same key (the same partitions).
        for _ in range(50):
            prediction = await live.ff.log_prediction(application="after", join_key="poison")
            await live.ff.log_feedback(
                metric="haiku_rating", prediction_id=prediction.prediction_id, value=True
            )
        await live.ff.flush()
        await wait_for_count(
            db,
            "SELECT count(*) FROM feedbackflow.predictions WHERE application = 'after'",
            50,
            within=60,
        )
        await wait_until(
            lambda: committed_to_the_end(live.settings), within=60, what="all committed"
        )
        assert live.worker.loop is not None
    stored = await count(
        db, "SELECT count(*) FROM feedbackflow.predictions WHERE application <> 'after'"
    )
    stored += await count(
        db,
        "SELECT count(*) FROM feedbackflow.feedback WHERE feedback_id NOT IN ("
        "SELECT feedback_id FROM feedbackflow.feedback f JOIN feedbackflow.predictions p"
        " ON f.prediction_id = p.prediction_id WHERE p.application = 'after')",
    )
    dead = await count(db, "SELECT count(*) FROM feedbackflow.dead_letters")
    assert dead == expected_dead
    assert stored + dead == len(corpus)
    assert (
        await count(
            db,
            "SELECT count(*) FROM feedbackflow.feedback f JOIN feedbackflow.predictions p"
            " ON f.prediction_id = p.prediction_id"
            " WHERE p.application = 'after' AND f.status = 'joined'",
        )
        == 50
    )
    reasons = await count(
        db, "SELECT count(*) FROM feedbackflow.dead_letters WHERE reason = '' OR error_field = ''"
    )
    assert reasons == 0
