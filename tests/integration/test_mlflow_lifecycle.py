"""MLflow's whole assessment life cycle through its own client (mlflow-tracing 3.17.2 from
PyPI) against the gateway, the real worker and Postgres: expectations, names the config does not
declare (defined at run time), updates as revisions, overrides, deletes as retractions, and the
strict setting that refuses unknown names."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import mlflow
import pytest
from mlflow.entities import AssessmentSource, Expectation, Feedback
from mlflow.exceptions import MlflowException

from ingest.metrics.registry import load_registry
from tests.integration.gateway import mlflow_at_gateway, running_gateway, with_gateway
from tests.integration.harness import count, wait_for_count, wait_until
from tests.integration.test_readme_examples import (
    README_GATEWAY,
    REPOSITORY_CONFIG,
    _block,
    _run_with_env,
)
from workers.devstack.servers import TansuBroker

TRACE = "tr-lifecycle-1"
JUDGE = AssessmentSource(source_type="LLM_JUDGE", source_id="judge-v2")
HUMAN = AssessmentSource(source_type="HUMAN", source_id="expert@example.com")


def _call(function: Any, **kwargs: Any) -> Any:
    return function(**kwargs)


async def call(function: Any, **kwargs: Any) -> Any:
    """The synchronous client in a thread: the gateway answers on its own loop meanwhile."""
    return await asyncio.to_thread(_call, function, **kwargs)


async def current(db: asyncpg.Connection, metric: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT source_id, value_bool, value_float, value_json::text AS value_json, status"
        " FROM feedbackflow.feedback_current WHERE metric = $1 ORDER BY source_id",
        metric,
    )
    return [tuple(row) for row in rows]


async def test_the_mlflow_client_runs_the_whole_assessment_life_cycle(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with mlflow_at_gateway(kafka.bootstrap, database_url, monkeypatch, TRACE):
        # A name no config declares: defined at run time as untyped (json) and joined.
        note = await call(
            mlflow.log_feedback,
            trace_id=TRACE,
            name="groundedness_note",
            value={"grounded": True, "sources": 2},
            source=JUDGE,
        )
        # Expectations (ground truth), a primitive one and a structured one.
        expected = await call(
            mlflow.log_expectation,
            trace_id=TRACE,
            name="expected_answer",
            value="Paris",
        )
        facts = await call(
            mlflow.log_expectation,
            trace_id=TRACE,
            name="expected_facts",
            value=["capital of France", "on the Seine"],
        )
        read_expected = await call(
            mlflow.get_assessment, trace_id=TRACE, assessment_id=expected.assessment_id
        )
        read_facts = await call(
            mlflow.get_assessment, trace_id=TRACE, assessment_id=facts.assessment_id
        )

        # An update is a revision: same id for the client, history kept in feedback.
        score = await call(
            mlflow.log_feedback, trace_id=TRACE, name="haiku_score", value=2.0, source=JUDGE
        )
        await call(
            mlflow.update_assessment,
            trace_id=TRACE,
            assessment_id=score.assessment_id,
            assessment=Feedback(name="haiku_score", value=4.5, rationale="second look"),
        )
        read_score = await call(
            mlflow.get_assessment, trace_id=TRACE, assessment_id=score.assessment_id
        )

        # An override: a human corrects the judge; the judge's becomes invalid.
        judged = await call(
            mlflow.log_feedback, trace_id=TRACE, name="haiku_rating", value=False, source=JUDGE
        )
        override = await call(
            mlflow.override_feedback,
            trace_id=TRACE,
            assessment_id=judged.assessment_id,
            value=True,
            source=HUMAN,
            rationale="the judge missed the second line",
        )
        judged_after_override = await call(
            mlflow.get_assessment, trace_id=TRACE, assessment_id=judged.assessment_id
        )
        await wait_for_count(
            db,
            "SELECT count(*) FROM feedbackflow.feedback"
            " WHERE metric = 'haiku_rating' AND status = 'joined'",
            3,  # the judge's, the human's, the judge's retraction
        )
        rating_overridden = await current(db, "haiku_rating")

        # Deleting the override restores the judge's; deleting twice is a no-op.
        await call(mlflow.delete_assessment, trace_id=TRACE, assessment_id=override.assessment_id)
        await call(mlflow.delete_assessment, trace_id=TRACE, assessment_id=override.assessment_id)
        with pytest.raises(MlflowException) as gone:
            await call(mlflow.get_assessment, trace_id=TRACE, assessment_id=override.assessment_id)
        judged_restored = await call(
            mlflow.get_assessment, trace_id=TRACE, assessment_id=judged.assessment_id
        )
        # All of it: the note, 2 expectations, 2 score revisions, the judge's rating, the
        # human's, the judge's retraction, the override's retraction, the judge's again.
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 10
        )
        rating_restored = await current(db, "haiku_rating")

    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert isinstance(read_expected, Expectation)
    assert read_expected.value == "Paris"
    assert isinstance(read_facts, Expectation)
    assert read_facts.value == ["capital of France", "on the Seine"]
    assert isinstance(read_score, Feedback)
    assert (read_score.assessment_id, read_score.value, read_score.rationale) == (
        score.assessment_id,
        4.5,
        "second look",
    )
    assert judged_after_override.valid is False
    assert judged_restored.valid is True
    assert override.overrides == judged.assessment_id

    # The untyped name is a stored definition, and its feedback was joined, not dead-lettered.
    assert await count(db, "SELECT count(*) FROM feedbackflow.dead_letters") == 0
    origin = await db.fetchval(
        "SELECT origin FROM feedbackflow.metric_definitions WHERE name = 'groundedness_note'"
    )
    assert origin == "mlflow"
    stored_note = await db.fetchrow(
        "SELECT metric_type, value_json::text AS v, status FROM feedbackflow.feedback"
        " WHERE feedback_id = $1",
        uuid.UUID(note.assessment_id),
    )
    assert stored_note is not None
    assert (stored_note["metric_type"], stored_note["status"]) == ("json", "joined")
    kinds = await db.fetch(
        "SELECT metric, metadata->>'mlflow.assessment_type' AS kind FROM feedbackflow.feedback"
        " WHERE metric LIKE 'expected_%' ORDER BY metric"
    )
    assert [(r["metric"], r["kind"]) for r in kinds] == [
        ("expected_answer", "expectation"),
        ("expected_facts", "expectation"),
    ]

    # Both revisions of the score are kept; the current value is the update's.
    history = await db.fetch(
        "SELECT value_float FROM feedbackflow.feedback"
        " WHERE metadata->>'mlflow.assessment_id' = $1 ORDER BY ts",
        score.assessment_id,
    )
    assert [r["value_float"] for r in history] == [2.0, 4.5]
    assert await current(db, "haiku_score") == [("judge-v2", None, 4.5, None, "joined")]

    # Overridden: only the human's counts; override deleted: only the judge's again.
    assert rating_overridden == [("expert@example.com", True, None, None, "joined")]
    assert rating_restored == [("judge-v2", False, None, None, "joined")]


async def test_a_strict_gateway_refuses_assessment_names_the_config_does_not_declare(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with mlflow_at_gateway(
        kafka.bootstrap, database_url, monkeypatch, TRACE, strict_metrics=True
    ):
        with pytest.raises(MlflowException) as refused:
            await call(mlflow.log_feedback, trace_id=TRACE, name="made_up", value=1)
        known = await call(mlflow.log_feedback, trace_id=TRACE, name="haiku_score", value=3.0)
        await wait_until(lambda: _stored(db, known.assessment_id), what="the configured one stored")
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "unknown metric 'made_up'" in refused.value.message
    assert "STRICT_METRICS" in refused.value.message
    assert await count(db, "SELECT count(*) FROM feedbackflow.metric_definitions") == 0


async def _stored(db: asyncpg.Connection, feedback_id: str) -> bool:
    found = await db.fetchval(
        "SELECT count(*) FROM feedbackflow.feedback WHERE feedback_id = $1",
        uuid.UUID(feedback_id),
    )
    return bool(found)


async def test_the_readme_mlflow_snippet_works_as_written(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = load_registry(REPOSITORY_CONFIG)
    async with mlflow_at_gateway(
        kafka.bootstrap, database_url, monkeypatch, "req-42", registry
    ) as at:
        code = _block("python", "mlflow.override_feedback").replace(
            README_GATEWAY, str(at.http.base_url).rstrip("/")
        )
        await asyncio.to_thread(_run_with_env, code, {})
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 7
        )
    assert capsys.readouterr().out.strip() == "False"
    rows = await db.fetch(
        "SELECT metric, source_id, value_bool, value_float, value_text, value_json::text AS json"
        " FROM feedbackflow.feedback_current WHERE join_key = 'req-42' ORDER BY metric"
    )
    assert [tuple(r) for r in rows] == [
        ("clarity_note", "judge-v1", None, None, None, '{"clear": true}'),
        ("expected_haiku", "default", None, None, None, '"an old silent pond"'),
        ("haiku_rating", "ana", True, None, None, None),
        ("haiku_stars", "ana", None, 4.0, None, None),
    ]


async def test_a_metric_one_gateway_defines_is_taken_by_another_within_its_refresh(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with mlflow_at_gateway(kafka.bootstrap, database_url, monkeypatch, TRACE) as at:
        settings = with_gateway(at.live.settings.model_copy(update={"metric_refresh_seconds": 0.2}))
        async with (
            running_gateway(settings, at.live.registry) as other_url,
            httpx.AsyncClient(base_url=other_url, headers=at.http.headers) as other,
        ):
            note = {"metric": "clarity_note", "join_key": TRACE, "value": {"clear": True}}
            before = await other.post("/v1/feedback", json=note)
            await call(mlflow.log_feedback, trace_id=TRACE, name="clarity_note", value={"a": 1})

            async def taken() -> bool:
                answer = await other.post("/v1/feedback", json=note)
                return answer.status_code == 202

            await wait_until(taken, within=10, what="the other gateway to know clarity_note")
            await wait_for_count(
                db, "SELECT count(*) FROM feedbackflow.feedback WHERE metric = 'clarity_note'", 2
            )
    assert before.status_code == 400
    assert "unknown metric 'clarity_note'" in before.json()["error"]
