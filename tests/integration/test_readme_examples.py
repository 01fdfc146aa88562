"""Every example in the README works as written: the config, the wire-format events, the SDK
snippet (run against the suite's broker, named in the environment as `feedbackflow dev` does),
the gateway's shell session and TensorZero's client (run against a gateway and worker on the
test's broker and database; the one change is the gateway's address, a free port here instead
of 127.0.0.1:8080)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import tomllib
import uuid
from pathlib import Path

import asyncpg
import pytest

from ingest import kafka_client
from ingest.metrics.registry import load_registry, registry_from_mapping
from tests.integration.gateway import new_key, running_gateway, with_gateway
from tests.integration.harness import (
    committed_to_the_end,
    isolated_settings,
    make_topics,
    producer,
    running_worker,
    wait_for_count,
    wait_until,
)
from workers.devstack.servers import TansuBroker
from workers.settings import PipelineSettings, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _block(language: str, containing: str) -> str:
    (block,) = [b for b in _blocks(language) if containing in b]
    return block


def test_the_readme_config_is_a_valid_config() -> None:
    (block,) = _blocks("toml")
    document = tomllib.loads(block)
    registry = registry_from_mapping(document)
    assert "haiku_rating" in registry.metrics
    assert PipelineSettings(**document["pipeline"]).windows_in_flight == 2


def _readme_events() -> tuple[str, str]:
    prediction, feedback = _blocks("json")
    return prediction, feedback


async def _send_as_written(settings: Settings, prediction: str, feedback: str) -> None:
    """Each event's bytes as the README shows them, keyed as it says: the prediction by its
    join key, the feedback by its target."""
    async with producer(settings) as ff:
        await ff.send_raw(
            ff.topics.predictions, json.loads(prediction)["join_key"], prediction.encode()
        )
        await ff.send_raw(
            ff.topics.feedback, json.loads(feedback)["prediction_id"], feedback.encode()
        )


async def test_the_readme_events_land_joined_in_postgres_whenever_they_are_sent(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """They were dead-lettered a year after they were written (their timestamps had aged past
    nothing, but a UUIDv7 id two years from its timestamp): sent as written today, both land,
    joined, and the worker's log says so."""
    caplog.set_level(logging.INFO, logger="feedbackflow.worker")
    prediction, feedback = _readme_events()
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings)
    async with running_worker(settings, load_registry(REPOSITORY_CONFIG)):
        await _send_as_written(settings, prediction, feedback)
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
        await wait_until(lambda: committed_to_the_end(settings), what="the worker to catch up")
    assert await db.fetchval("SELECT count(*) FROM feedbackflow.dead_letters") == 0
    stored = await db.fetchrow(
        "SELECT p.join_key, p.model, f.metric, f.source_id FROM feedbackflow.feedback f"
        " JOIN feedbackflow.predictions p ON p.prediction_id = f.prediction_id"
    )
    assert stored is not None
    assert tuple(stored) == ("req-42", "gpt-haiku-a", "haiku_rating", "judge-v1")
    written = [r.getMessage() for r in caplog.records if "window written" in r.getMessage()]
    assert written, "no written window was logged"
    assert all(r.levelno == logging.INFO for r in caplog.records if "window written" in r.msg)


async def test_a_dead_letter_is_logged_naming_the_field_and_the_reason(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a new user saw: the README's prediction as it used to be written, with a timestamp
    past retention, went to dead_letters and the log said nothing."""
    caplog.set_level(logging.INFO, logger="feedbackflow.worker")
    prediction, feedback = _readme_events()
    aged = json.dumps({**json.loads(prediction), "timestamp": "2024-11-25T10:00:00Z"})
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings)
    async with running_worker(settings, load_registry(REPOSITORY_CONFIG)):
        await _send_as_written(settings, aged, feedback)
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.dead_letters", 1)
        await wait_until(lambda: committed_to_the_end(settings), what="the worker to catch up")
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("dead letter ")
    ]
    assert len(warnings) == 1, warnings
    assert "timestamp: " in warnings[0]
    assert "retention" in warnings[0]
    assert f"{settings.topic_prefix}.predictions/" in warnings[0]


async def test_the_readme_sdk_snippet_lands_in_postgres_with_only_the_bootstrap_set(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a new user saw: against the embedded broker the snippet failed with aiokafka's
    ``UnknownError`` (no InitProducerId), even with FEEDBACKFLOW_KAFKA_IDEMPOTENCE=false, which
    the SDK did not read.  Now only the broker's address is set: the SDK finds out what the
    broker takes, says so once, and the events are joined in Postgres."""
    caplog.set_level(logging.WARNING, logger="feedbackflow.kafka")
    code = _block("python", "FeedbackflowProducer")
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings)
    monkeypatch.delenv("FEEDBACKFLOW_KAFKA_IDEMPOTENCE", raising=False)
    monkeypatch.setenv("FEEDBACKFLOW_KAFKA_BOOTSTRAP", kafka.bootstrap)
    monkeypatch.setenv("FEEDBACKFLOW_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setattr(kafka_client, "_TAKES_IDEMPOTENT", {})  # as a fresh process asks
    # The snippet's top-level ``async with`` runs inside a coroutine, as in an async service.
    source = "async def snippet():\n" + "".join(f"    {line}\n" for line in code.splitlines())
    scope: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    async with running_worker(settings, load_registry(REPOSITORY_CONFIG)):
        await scope["snippet"]()  # type: ignore[operator]
        await scope["snippet"]()  # type: ignore[operator]
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 2
        )
    rows = await db.fetch(
        "SELECT p.model, f.value_bool FROM feedbackflow.feedback f"
        " JOIN feedbackflow.predictions p ON p.prediction_id = f.prediction_id"
    )
    assert [tuple(r) for r in rows] == [("gpt-haiku-a", True)] * 2
    warned = [r.getMessage() for r in caplog.records if "idempotent" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "FEEDBACKFLOW_KAFKA_IDEMPOTENCE=false" in warned[0]


def test_the_readme_join_key_example_holds() -> None:
    code = _block("python", "JoinKey.from_dict")
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own code


REPOSITORY_CONFIG = README.with_name("feedbackflow.toml")
README_GATEWAY = "http://127.0.0.1:8080"
# The longest a README shell session may take on a loaded machine.
SHELL_SESSION_SECONDS = 180


async def test_the_readme_gateway_session_and_tensorzero_client_work_as_written(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    registry = load_registry(REPOSITORY_CONFIG)
    settings = with_gateway(isolated_settings(kafka.bootstrap, database_url))
    await make_topics(settings)
    async with running_worker(settings, registry), running_gateway(settings, registry) as url:
        script = _block("sh", "Idempotency-Key").replace(README_GATEWAY, url)
        out = await run_shell_session(script, {"FEEDBACKFLOW_DATABASE_URL": database_url})
        answers = [json.loads(line) for line in out.splitlines()]
        prediction, stars, stars_again, mistake, batch, thumbs = answers
        assert prediction["join_key"] == "req-42"
        assert stars == stars_again
        assert "feedback_id" in stars
        assert mistake["error"] == "value: metric 'haiku_rating' is boolean; got a string"
        statuses = [i["status"] for i in batch["predictions"] + batch["feedback"]]
        assert statuses == [202, 202, 400]
        assert "feedback_id" in thumbs

        token_prediction = await _when_stored(db, "req-44")
        code = _block("python", "TensorZeroGateway").replace(README_GATEWAY, url)
        key = await new_key(database_url, "feedback")
        tz_env = {"KEY": key, "PREDICTION": str(token_prediction)}
        await asyncio.to_thread(_run_with_env, code, tz_env)
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 5
        )
        await wait_until(lambda: committed_to_the_end(settings), what="the worker to catch up")
    rows = await db.fetch(
        "SELECT metric, join_key, coalesce(source_type, '-') FROM feedbackflow.feedback"
    )
    assert sorted(tuple(r) for r in rows) == sorted(
        [
            ("comment", "req-43", "-"),
            ("comment", str(token_prediction), "-"),
            ("haiku_rating", str(token_prediction), "end_user"),
            ("haiku_rating", str(token_prediction), "-"),
            ("haiku_stars", "req-42", "-"),
        ]
    )


async def _when_stored(db: asyncpg.Connection, join_key: str) -> uuid.UUID:
    found: list[uuid.UUID] = []

    async def stored() -> bool:
        value = await db.fetchval(
            "SELECT prediction_id FROM feedbackflow.predictions WHERE join_key = $1", join_key
        )
        found[:] = [value] if value is not None else []
        return bool(found)

    await wait_until(stored, what=f"the prediction {join_key} to be stored")
    return found[0]


async def run_shell_session(script: str, env: dict[str, str], cwd: Path | None = None) -> str:
    """A README shell session run as written by bash (-euo pipefail), with this virtualenv's
    commands on the PATH and ``env`` over the environment; its standard output."""
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            **env,
        },
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(shell.communicate(), timeout=SHELL_SESSION_SECONDS)
    assert shell.returncode == 0, err.decode()
    return out.decode()


def _run_with_env(code: str, env: dict[str, str]) -> None:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own code
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
