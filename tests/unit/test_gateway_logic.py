"""The gateway's pure parts: admission by the worker's own decoder, TensorZero's body mapped,
tokens and their grants, key look-ups cached for a bounded time, a plan remembered whole."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.gateway.admission import Admission, Admitted
from ingest.gateway.auth import Gatekeeper
from ingest.gateway.errors import Refusal
from ingest.gateway.intake import Plan
from ingest.gateway.native import within_grant
from ingest.gateway.tensorzero import TensorZeroFeedback, as_feedback, in_their_words
from ingest.sdk.tokens import TokenRefused, mint_feedback_token, read_feedback_token
from ingest.topics import TopicNames
from tests.integration.harness import metric_registry
from workers.postgres.api_keys import ApiKey, StoredKey, secret_hash, split_key
from workers.stream.decode import Decoder

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SECRET = "s" * 32
TOPICS = TopicNames("t")


def admission(max_event_bytes: int = 1_000_000) -> Admission:
    return Admission(metric_registry(), TOPICS, timedelta(days=90), max_event_bytes)


def refusal_of(call: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as refused:
        call(*args)
    return refused.value


def test_a_prediction_without_an_id_gets_a_uuid7_at_its_time_and_its_join_key() -> None:
    admitted = admission().prediction({"application": "a", "join_key": "req-1"}, NOW)
    prediction_id = uuid.UUID(admitted.ids["prediction_id"])
    assert prediction_id.version == 7
    assert prediction_id.int >> 80 == int(NOW.timestamp() * 1000)
    assert (admitted.event.topic, admitted.event.key) == ("t.predictions", "req-1")
    assert admitted.ids["join_key"] == "req-1"


def test_given_ids_are_kept_and_an_old_timestamp_mints_an_id_at_that_time() -> None:
    given = str(uuid.uuid4())
    assert admission().prediction({"application": "a", "prediction_id": given}, NOW).ids == {
        "prediction_id": given,
        "join_key": given,
    }
    old = NOW - timedelta(days=30)
    admitted = admission().prediction({"application": "a", "timestamp": old.isoformat()}, NOW)
    assert uuid.UUID(admitted.ids["prediction_id"]).int >> 80 == int(old.timestamp() * 1000)


def test_what_is_admitted_is_what_the_worker_decodes_without_a_dead_letter() -> None:
    admitted = [
        admission().prediction({"application": "a", "inputs": {"q": "x"}}, NOW),
        admission().feedback({"metric": "haiku_rating", "join_key": "k", "value": True}, NOW),
    ]

    class Record:
        def __init__(self, item: Admitted) -> None:
            self.topic, self.key, self.value = item.event.topic, None, item.event.value
            self.partition, self.offset, self.timestamp = 0, 0, 0

    # The worker reads them later (an hour later here): same verdict.
    batch = Decoder(metric_registry(), TOPICS, timedelta(days=90)).decode(
        [Record(a) for a in admitted], NOW + timedelta(hours=1)
    )
    assert (len(batch.predictions), len(batch.feedback), batch.dead_letters) == (1, 1, [])
    assert str(batch.feedback[0].feedback_id) == admitted[1].ids["feedback_id"]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"metric": "haiku_rating", "join_key": "k", "value": 1}, "value", "boolean"),
        ({"metric": "nope", "join_key": "k", "value": 1}, "metric", "unknown metric"),
        ({"metric": "task_success", "join_key": "k", "value": True}, "join_key", "episode"),
        ({"metric": "comment", "value": "x"}, "(event)", "exactly one of"),
        ({"metric": "comment", "join_key": "k", "value": "x", "extra": 1}, "extra", "Extra"),
        ({"metric": "comment", "join_key": "k", "value": "\x00"}, "value", "NUL"),
        (
            {"metric": "comment", "join_key": "k", "value": "x", "timestamp": "soon"},
            "timestamp",
            "",
        ),
        (
            {"metric": "comment", "join_key": "k", "value": "x", "timestamp": "2020-01-01T00:00Z"},
            "timestamp",
            "retention",
        ),
    ],
)
def test_feedback_the_worker_would_dead_letter_is_refused_naming_the_field(
    fields: dict[str, Any], field: str, words: str
) -> None:
    refused = refusal_of(admission().feedback, fields, NOW)
    assert (refused.status, refused.field) == (400, field)
    assert words in refused.reason
    assert not refused.reason.startswith(f"{field}: ")  # the field is not said twice


def test_an_event_larger_than_the_broker_takes_is_413() -> None:
    refused = refusal_of(
        admission(max_event_bytes=200).feedback,
        {"metric": "comment", "join_key": "k", "value": "x" * 300},
        NOW,
    )
    assert (refused.status, refused.field) == (413, "(event)")


def tz(**body: Any) -> dict[str, Any]:
    return as_feedback(TensorZeroFeedback.model_validate(body))


def test_tensorzero_bodies_map_to_wire_feedback() -> None:
    inference = str(uuid.uuid4())
    assert tz(metric_name="m", value=True, inference_id=inference, tags={"a": "b"}) == {
        "metric": "m",
        "value": True,
        "prediction_id": inference,
        "tags": {"a": "b"},
    }
    episode = str(uuid.uuid4())
    mapped = tz(metric_name="m", value=1, episode_id=episode, internal=True, dryrun=False)
    assert mapped == {
        "metric": "m",
        "value": 1,
        "episode_id": episode,
        "metadata": {"tensorzero_internal": "true"},
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"metric_name": "m", "value": True}, "neither given"),
        (
            {
                "metric_name": "m",
                "value": True,
                "inference_id": uuid.uuid4(),
                "episode_id": uuid.uuid4(),
            },
            "both given",
        ),
        ({"metric_name": "m", "value": None, "inference_id": uuid.uuid4()}, "null"),
    ],
)
def test_what_the_tensorzero_client_does_not_check_is_refused(
    body: dict[str, Any], words: str
) -> None:
    with pytest.raises(Refusal) as refused:
        tz(**body)
    assert words in refused.value.reason


def test_refusals_on_the_tensorzero_route_use_its_words() -> None:
    ours = Refusal(400, "prediction_id", "metric 'x' takes prediction_id or join_key, not y")
    theirs = in_their_words(ours)
    assert (theirs.field, theirs.reason) == ("inference_id", "metric 'x' takes inference_id, not y")
    assert in_their_words(Refusal(400, "metric", "unknown")).field == "metric_name"


def test_a_token_carries_its_grant_and_refuses_tampering_expiry_and_other_secrets() -> None:
    prediction = uuid.uuid4()
    token = mint_feedback_token(SECRET, prediction, ["thumbs", "stars"])
    grant = read_feedback_token(SECRET, token)
    assert (grant.prediction_id, grant.metrics) == (prediction, frozenset({"thumbs", "stars"}))
    expired = mint_feedback_token(SECRET, prediction, ["thumbs"], timedelta(seconds=1), now=0)
    for bad, words in [
        (expired, "expired"),
        (mint_feedback_token("o" * 32, prediction, ["thumbs"]), "signature"),
        (token[:-3] + "abc", "signature"),
        ("a.b.c", "not a valid"),
    ]:
        with pytest.raises(TokenRefused, match=words):
            read_feedback_token(SECRET, bad)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint_feedback_token("short", prediction, ["thumbs"])


def test_a_grant_pins_the_prediction_the_metrics_and_the_source() -> None:
    prediction = uuid.uuid4()
    grant = read_feedback_token(SECRET, mint_feedback_token(SECRET, prediction, ["thumbs"]))
    body = {"metric": "thumbs", "prediction_id": str(prediction), "value": True}
    assert within_grant(body, grant)["source"] == {"type": "end_user"}
    with_id = {**body, "source": {"type": "end_user", "id": "u1"}}
    assert within_grant(with_id, grant)["source"]["id"] == "u1"
    for bad in (
        {**body, "prediction_id": str(uuid.uuid4())},
        {**body, "metric": "stars"},
        {**body, "source": {"type": "llm_judge"}},
        {"metric": "thumbs", "join_key": "k", "value": True},
    ):
        assert refusal_of(within_grant, bad, grant).status == 403


async def test_a_key_lookup_is_trusted_for_the_cache_time_and_then_asked_again() -> None:
    now = [0.0]
    rows: dict[str, StoredKey] = {}
    asked: list[str] = []

    async def lookup(key_id: str) -> StoredKey | None:
        asked.append(key_id)
        return rows.get(key_id)

    gate = Gatekeeper(
        enabled=True, lookup=lookup, token_secret=None, cache_seconds=2.0, clock=lambda: now[0]
    )
    key = ApiKey("abc", "svc", frozenset({"feedback"}), NOW, None)
    rows["abc"] = StoredKey(key, secret_hash("sekrit"))
    caller = await gate.caller("Bearer ffk_abc_sekrit")
    assert caller.key == key
    await gate.caller("Bearer ffk_abc_sekrit")
    assert asked == ["abc"]
    rows["abc"] = StoredKey(
        ApiKey("abc", "svc", frozenset({"feedback"}), NOW, NOW), secret_hash("sekrit")
    )
    await gate.caller("Bearer ffk_abc_sekrit")  # still cached
    now[0] = 2.5
    with pytest.raises(Refusal, match="was revoked"):
        await gate.caller("Bearer ffk_abc_sekrit")
    with pytest.raises(Refusal, match="unknown API key"):
        await gate.caller("Bearer ffk_abc_wrong")
    with pytest.raises(Refusal) as refused:
        caller.require("predictions")
    assert refused.value.status == 403


def test_keys_split_into_id_and_secret() -> None:
    assert split_key("ffk_0a1b_se_cr_et") == ("0a1b", "se_cr_et")
    assert split_key("sk-abc") is None
    assert split_key("ffk_nosecret") is None


def test_a_plan_is_remembered_and_recalled_whole() -> None:
    admitted = admission().feedback({"metric": "comment", "join_key": "k", "value": "x"}, NOW)
    plan = Plan((admitted, Refusal(400, "value", "wrong")))
    recalled = Plan.recalled(plan.remembered(b"digest"))
    assert recalled.events == plan.events
    assert isinstance(recalled.items[1], Refusal)
    assert (recalled.items[1].field, recalled.items[1].reason) == ("value", "wrong")
