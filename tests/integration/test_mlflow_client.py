"""MLflow's own published client (mlflow-tracing 3.17.2, from PyPI) pointed at the gateway:
``log_feedback`` lands joined to the trace's prediction, ``get_assessment`` reads it back, a
retried create is one feedback, and refusals arrive as MLflow's errors."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import mlflow
import pytest
from mlflow.entities import AssessmentError, AssessmentSource, Feedback
from mlflow.exceptions import MlflowException

from tests.integration.gateway import mlflow_at_gateway
from tests.integration.harness import (
    committed_to_the_end,
    count,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker

TRACE = "tr-7f3a9c"


def _log(trace_id: str, **kwargs: Any) -> Any:
    return mlflow.log_feedback(trace_id=trace_id, **kwargs)


async def test_the_mlflow_client_logs_feedback_that_lands_joined_and_reads_back(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with mlflow_at_gateway(kafka.bootstrap, database_url, monkeypatch, TRACE) as at:
        live, http, prediction_id = at.live, at.http, at.prediction_id
        human = AssessmentSource(source_type="HUMAN", source_id="annotator-1")
        thumbs = await asyncio.to_thread(
            _log,
            TRACE,
            name="haiku_rating",
            value=True,
            source=human,
            rationale="answers the question",
            metadata={"ui": "review"},
            span_id="span-retriever",
        )
        judge = AssessmentSource(source_type="LLM_JUDGE", source_id="judge-v2")
        failed = await asyncio.to_thread(
            _log,
            TRACE,
            name="haiku_score",
            error=AssessmentError(error_code="TIMEOUT", error_message="judge timed out"),
            source=judge,
        )
        with pytest.raises(MlflowException) as refused:
            await asyncio.to_thread(_log, TRACE, name="haiku_rating", value="yes")
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "boolean" in refused.value.message

        # The client retries a create with the same bytes: still one feedback.
        retried = {
            "assessment": {
                "assessment_name": "comment",
                "trace_id": TRACE,
                "source": {"source_type": "CODE", "source_id": "ci"},
                "create_time": "2026-12-02T01:00:00.000Z",
                "feedback": {"value": "fine"},
            }
        }
        path = f"/api/3.0/mlflow/traces/{TRACE}/assessments"
        first = await http.post(path, json=retried)
        again = await http.post(path, json=retried)
        assert first.status_code == again.status_code == 200
        assert (
            first.json()["assessment"]["assessment_id"]
            == again.json()["assessment"]["assessment_id"]
        )

        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 3
        )
        await wait_until(lambda: committed_to_the_end(live.settings), what="the worker")
        read = await asyncio.to_thread(
            mlflow.get_assessment, trace_id=TRACE, assessment_id=thumbs.assessment_id
        )
        with pytest.raises(MlflowException) as missing:
            await asyncio.to_thread(
                mlflow.get_assessment, trace_id=TRACE, assessment_id=str(uuid.uuid4())
            )
        assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert await count(db, "SELECT count(*) FROM feedbackflow.feedback") == 3
    assert isinstance(read, Feedback)
    assert (read.name, read.value, read.rationale, read.span_id) == (
        "haiku_rating",
        True,
        "answers the question",
        "span-retriever",
    )
    assert (read.source.source_type, read.source.source_id) == ("HUMAN", "annotator-1")
    assert read.metadata == {"ui": "review"}
    row = await db.fetchrow(
        "SELECT error_code, source_type, prediction_id FROM feedbackflow.feedback"
        " WHERE feedback_id = $1",
        uuid.UUID(failed.assessment_id),
    )
    assert row is not None
    assert (row["error_code"], row["source_type"]) == ("TIMEOUT", "llm_judge")
    assert str(row["prediction_id"]) == prediction_id
