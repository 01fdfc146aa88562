"""log10's own published client (log10-io 0.16.1 from PyPI), its CLI and its Python API,
pointed at the gateway with the real worker and Postgres: feedback tasks are metrics defined at
run time, feedback aimed by completion tags selectors is joined to every prediction carrying the
tags (pending until one does), and listing and downloading page through it with the predictions
it matched."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ingest.metrics.registry import load_registry
from tests.integration.gateway import bearer, new_key, running_gateway, with_gateway
from tests.integration.harness import count, live_pipeline, wait_for_count
from tests.integration.test_readme_examples import (
    README_GATEWAY,
    REPOSITORY_CONFIG,
    _block,
    run_shell_session,
)
from workers.devstack.servers import TansuBroker

LOG10 = str(Path(sys.executable).with_name("log10"))
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"enum": ["good", "bad"]}, "note": {"type": "string"}},
    "required": ["verdict"],
}


def log10_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOG10, *args],
        env={**os.environ, "COLUMNS": "300", **env},  # rich wraps tables at the width
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


PYTHON_API = """
import json, sys
from log10.feedback.feedback import Feedback

answer = Feedback().create(
    task_id=sys.argv[1],
    values={"verdict": "bad", "note": "too long"},
    completion_tags_selector=sys.argv[2:],
    comment="from the Python API",
)
print(json.dumps(answer.json()))
"""


def python_api_create(env: dict[str, str], task_id: str, selector: list[str]) -> Any:
    """log10's Python API in a script of its own, configured as its users do: by environment
    (its client leaves its connections open; a process of its own keeps that out of the test)."""
    ran = subprocess.run(
        [sys.executable, "-c", PYTHON_API, task_id, *selector],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.strip().splitlines()[-1])


async def selector_statuses(db: asyncpg.Connection) -> dict[str, tuple[str, int]]:
    rows = await db.fetch(
        "SELECT array_to_string(selector, ',') AS s, status,"
        " cardinality(matched_prediction_ids) AS n FROM feedbackflow.selector_feedback"
    )
    return {r["s"]: (r["status"], r["n"]) for r in rows}


async def test_the_log10_cli_and_python_api_create_tasks_and_feedback_that_joins_by_tags(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url, selectable_tags=("session",)) as live:
        key = await new_key(database_url, "predictions", "feedback")
        async with (
            running_gateway(with_gateway(live.settings), live.registry) as url,
            httpx.AsyncClient(base_url=url, headers=bearer(key)) as http,
        ):
            predictions = {}
            for name, tags in (
                ("a", {"session": "s-1", "user": "u1"}),
                ("b", {"session": "s-1"}),
                ("c", {"session": "s-2"}),
            ):
                answer = await http.post(
                    "/v1/predictions", json={"application": "chat", "tags": tags}
                )
                assert answer.status_code == 202, answer.text
                predictions[name] = answer.json()["prediction_id"]
            await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 3)

            env = {"LOG10_URL": url, "LOG10_TOKEN": key, "LOG10_ORG_ID": "org-1"}
            created = await asyncio.to_thread(
                log10_cli,
                env,
                "feedback-task",
                "create",
                "--name",
                "answer_review",
                "--task_schema",
                json.dumps(SCHEMA),
                "--instruction",
                "Is the answer right?",
            )
            assert created.returncode == 0, created.stderr
            found = re.search(r"task_id to add feedback: (\S+)", created.stdout)
            assert found, created.stdout
            task_id = found.group(1)

            by_cli = await asyncio.to_thread(
                log10_cli,
                env,
                "feedback",
                "create",
                "--task_id",
                task_id,
                "--values",
                json.dumps({"verdict": "good"}),
                "--completion_tags_selector",
                "session=s-1",
                "--comment",
                "both turns",
            )
            assert by_cli.returncode == 0, by_cli.stderr
            by_api = await asyncio.to_thread(python_api_create, env, task_id, ["session=s-2"])
            waiting = await asyncio.to_thread(python_api_create, env, task_id, ["session=s-9"])
            refused = await asyncio.to_thread(
                log10_cli,
                env,
                "feedback",
                "create",
                "--task_id",
                task_id,
                "--values",
                json.dumps({"verdict": "meh"}),
                "--completion_tags_selector",
                "session=s-1",
            )
            not_indexed = await http.post(
                "/api/v1/feedback",
                headers={"x-log10-token": key},
                json={
                    "task_id": task_id,
                    "json_values": {"verdict": "good"},
                    "completion_tags_selector": ["user=u1"],
                },
            )
            await wait_for_count(
                db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 3
            )
            statuses_before = await selector_statuses(db)

            late = await http.post(
                "/v1/predictions", json={"application": "chat", "tags": {"session": "s-9"}}
            )
            await wait_for_count(
                db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 4
            )
            listed = await asyncio.to_thread(
                log10_cli, env, "feedback", "list", "--task_id", task_id
            )
            out = tmp_path / "feedback.jsonl"
            downloaded = await asyncio.to_thread(
                log10_cli, env, "feedback", "download", "--task_id", task_id, "--file", str(out)
            )
            tasks = await asyncio.to_thread(log10_cli, env, "feedback-task", "list")

    assert statuses_before == {
        "session=s-1": ("joined", 2),
        "session=s-2": ("joined", 1),
        "session=s-9": ("pending", 0),
    }
    assert refused.returncode != 0
    assert "json_values: metric 'answer_review': value at verdict does not match" in (
        refused.stdout + refused.stderr
    )
    assert not_indexed.status_code == 400
    assert not_indexed.json()["error"].startswith("completion_tags_selector: needs an item")
    assert by_api["task_name"] == "answer_review"

    joined = await db.fetch(
        "SELECT prediction_id::text AS p, value_json->>'verdict' AS v, rationale, source_type"
        " FROM feedbackflow.feedback ORDER BY prediction_ts"
    )
    verdicts = {r["p"]: r["v"] for r in joined}
    assert verdicts == {
        predictions["a"]: "good",
        predictions["b"]: "good",
        predictions["c"]: "bad",
        late.json()["prediction_id"]: "bad",
    }
    assert {r["source_type"] for r in joined} == {"human"}
    assert await count(db, "SELECT count(*) FROM feedbackflow.dead_letters") == 0
    definition = await db.fetchrow(
        "SELECT origin, definition->>'description' AS instruction"
        " FROM feedbackflow.metric_definitions WHERE name = 'answer_review'"
    )
    assert definition is not None
    assert tuple(definition) == ("log10", "Is the answer right?")

    assert listed.returncode == 0, listed.stderr
    assert "Total feedback: 3" in listed.stdout
    assert downloaded.returncode == 0, downloaded.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    matched = {line["id"]: sorted(line["matched_completion_ids"]) for line in lines}
    assert matched == {
        # The CLI echoes the answer as a Python dict.
        ast.literal_eval(by_cli.stdout.split("\n", 1)[1])["id"]: sorted(
            [predictions["a"], predictions["b"]]
        ),
        by_api["id"]: [predictions["c"]],
        waiting["id"]: [late.json()["prediction_id"]],
    }
    assert tasks.returncode == 0, tasks.stderr
    assert "answer_review" in tasks.stdout
    assert "Is the answer right?" in tasks.stdout


@pytest.fixture(autouse=True)
def _no_log10_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    """log10 loads a .env from the working directory; the test's settings come from its env."""
    monkeypatch.delenv("LOG10_TAGS", raising=False)


async def test_the_readme_log10_session_works_as_written(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    registry = load_registry(REPOSITORY_CONFIG)
    async with (
        live_pipeline(
            kafka.bootstrap, database_url, registry=registry, selectable_tags=("session",)
        ) as live,
        running_gateway(with_gateway(live.settings), registry) as url,
    ):
        script = _block("sh", "log10 feedback-task create").replace(README_GATEWAY, url)
        await run_shell_session(script, {"FEEDBACKFLOW_DATABASE_URL": database_url}, cwd=tmp_path)
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 2
        )
    [line] = [json.loads(text) for text in (tmp_path / "review.jsonl").read_text().splitlines()]
    stored = await db.fetch("SELECT prediction_id::text AS p FROM feedbackflow.predictions")
    assert line["json_values"] == {"verdict": "good"}
    assert line["task_name"] == "answer_review"
    assert sorted(line["matched_completion_ids"]) == sorted(r["p"] for r in stored)
