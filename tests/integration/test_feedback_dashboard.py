"""The Feedback dashboard's SQL, as committed and as Grafana sends it, and the report drawn from
the same queries, run against a database the real pipeline filled (SDK -> tansu -> worker ->
Postgres); the panels logged in as Grafana's data source does: a login role that is only a
member of feedbackflow_reader, read-only.

Every template variable's query runs first and its values are what "All" then selects; every
panel must return the columns it draws, and the values worked out by hand from the events.

The events, all at t0 (two hours ago) about predictions half an hour older: P1 and P3 (model
m-a), P2 and P4 (m-b), application haiku.  haiku_rating: alice (human) true on P1, P2 false,
P3 true; the judge (llm_judge) true on P1 and P2; bob on a join key no prediction has (pending).
haiku_score: alice 4 on P1, 2 on P3, 5 on P2.  tone: alice formal on P1 and casual on P2, the
judge formal on P1.  A comment from alice on P2.  P4 gets nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from matplotlib.image import imread

from tests.grafana_sql import All, interpolate
from tests.integration.harness import live_pipeline, wait_for_count, wait_for_read_model
from workers.dashboards.build import DASHBOARD_DIR
from workers.devstack.servers import TansuBroker
from workers.read_model.queries import Selection
from workers.report.data import read_report
from workers.report.figure import draw

ALICE = {"type": "human", "id": "alice"}
BOB = {"type": "human", "id": "bob"}
JUDGE = {"type": "llm_judge", "id": "judge"}

# What each panel draws: its columns, in order.
COLUMNS = {
    "Feedback per metric": ["time", "metric", "feedback_count"],
    "Share positive per model": ["time", "metric", "model", "value"],
    "Mean value per model": ["time", "metric", "model", "value"],
    "Categories": ["metric", "category", "feedback_count", "share"],
    "Feedback delay": ["time", "metric", "p50", "p90", "p99"],
    "Feedback delay over the range": [
        "metric",
        "joined_count",
        "p50_seconds",
        "p90_seconds",
        "p99_seconds",
    ],
    "Coverage per model": ["time", "application", "model", "coverage"],
    "Pending and expired": ["time", "metric", "pending", "expired"],
    "Cohen's kappa: $source_type_a against $source_type_b": ["time", "metric", "kappa"],
    "Fleiss' kappa across annotators": ["time", "metric", "kappa"],
    "Items compared": ["time", "metric", "items", "observed_agreement", "kappa"],
    "Latest comments and demonstrations": [
        "time",
        "metric",
        "model",
        "value_text",
        "value_json",
        "rationale",
        "source_type",
        "source_id",
        "inputs",
        "outputs",
    ],
}


@pytest.fixture
async def grafana_login(database_url: str, db: asyncpg.Connection) -> AsyncIterator[str]:
    """A database URL for a login role with feedbackflow_reader and nothing more, as
    deploy/postgres/initdb/10-grafana-login.sh makes Grafana's."""
    role = f"grafana_{uuid.uuid4().hex[:10]}"
    await db.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER IN ROLE feedbackflow_reader")
    await db.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
    parts = urlsplit(database_url)
    netloc = f"{role}@{parts.hostname}:{parts.port}" if parts.port else f"{role}@{parts.hostname}"
    try:
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        await db.execute(f"DROP ROLE {role}")


async def fill(kafka: TansuBroker, database_url: str, db: asyncpg.Connection) -> datetime:
    now = datetime.now(UTC)
    t0 = (now - timedelta(hours=2)).replace(minute=5, second=0, microsecond=0)
    made = t0 - timedelta(minutes=30)
    async with live_pipeline(kafka.bootstrap, database_url, partitions=1) as live:
        ff = live.ff

        async def prediction(model: str, n: int) -> Any:
            return await ff.log_prediction(
                application="haiku",
                model=model,
                timestamp=made,
                inputs={"topic": f"topic {n}"},
                outputs={"haiku": f"haiku {n}"},
            )

        p1, p2, p3 = (
            await prediction("m-a", 1),
            await prediction("m-b", 2),
            await prediction("m-a", 3),
        )
        await prediction("m-b", 4)
        sent: list[tuple[str, Any, Any, dict[str, str]]] = [
            ("haiku_rating", p1, True, ALICE),
            ("haiku_rating", p2, False, ALICE),
            ("haiku_rating", p3, True, ALICE),
            ("haiku_rating", p1, True, JUDGE),
            ("haiku_rating", p2, True, JUDGE),
            ("haiku_score", p1, 4.0, ALICE),
            ("haiku_score", p3, 2.0, ALICE),
            ("haiku_score", p2, 5.0, ALICE),
            ("tone", p1, "formal", ALICE),
            ("tone", p2, "casual", ALICE),
            ("tone", p1, "formal", JUDGE),
            ("comment", p2, "too long by a line", ALICE),
        ]
        for metric, target, value, source in sent:
            await ff.log_feedback(
                metric=metric,
                prediction_id=target.prediction_id,
                value=value,
                source=source,
                timestamp=t0,
            )
        await ff.log_feedback(
            metric="haiku_rating", join_key="nowhere", value=True, source=BOB, timestamp=t0
        )
        await ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.feedback", len(sent) + 1)
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 4)
        await wait_for_read_model(db)
    return now


def by(rows: list[asyncpg.Record], *keys: str, value: str) -> dict[Any, float]:
    """Rows summed by ``keys`` (the buckets of the range added up)."""
    summed: dict[Any, float] = defaultdict(float)
    for r in rows:
        summed[tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]] += r[value]
    return dict(summed)


async def test_every_feedback_panel_answers_from_the_pipeline_as_grafana_reads_it(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, grafana_login: str
) -> None:
    now = await fill(kafka, database_url, db)
    board = json.loads((DASHBOARD_DIR / "feedback.json").read_text(encoding="utf-8"))
    since, until = now - timedelta(days=7), now + timedelta(minutes=1)  # the default range
    reader = await asyncpg.connect(grafana_login)
    try:
        listed: dict[str, list[str]] = {}
        selected: dict[str, list[str] | All] = {}
        for variable in board["templating"]["list"]:
            name = variable["name"]
            if variable["type"] == "query":
                sql = interpolate(variable["query"], since, until, {})
                listed[name] = [r[0] for r in await reader.fetch(sql)]
                assert variable["current"]["value"] == "$__all"
                selected[name] = All(variable["allValue"])
            else:
                listed[name] = selected[name] = [variable["current"]["value"]]
        assert listed == {
            "application": ["haiku"],
            "metric": ["comment", "haiku_rating", "haiku_score", "tone"],
            "model": ["m-a", "m-b"],
            "source_type_a": ["llm_judge"],
            "source_type_b": ["human"],
        }

        answers: dict[str, list[asyncpg.Record]] = {}
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            (target,) = panel["targets"]
            rows = await reader.fetch(interpolate(target["rawSql"], since, until, selected))
            assert rows, f"{panel['title']}: no rows"
            assert list(rows[0].keys()) == COLUMNS[panel["title"]], panel["title"]
            if target["format"] == "time_series":
                times = [r["time"] for r in rows]
                assert times == sorted(times), f"{panel['title']}: not in time order"
            answers[panel["title"]] = rows
        # One model chosen: its series alone (and pending feedback, of no model, left out).
        values = next(p for p in board["panels"] if p["title"] == "Share positive per model")
        one_model = {**selected, "model": ["m-b"]}
        sql = interpolate(values["targets"][0]["rawSql"], since, until, one_model)
        assert {r["model"] for r in await reader.fetch(sql)} == {"m-b"}
    finally:
        await reader.close()

    assert answers.keys() == COLUMNS.keys()
    assert by(answers["Feedback per metric"], "metric", value="feedback_count") == {
        "haiku_rating": 6,  # bob's pending one counts too
        "haiku_score": 3,
        "tone": 3,
        "comment": 1,
    }
    assert by(answers["Share positive per model"], "metric", "model", value="value") == {
        ("haiku_rating", "m-a"): 1.0,  # alice and the judge on P1, alice on P3
        ("haiku_rating", "m-b"): 0.5,  # alice false, the judge true on P2
    }
    assert by(answers["Mean value per model"], "metric", "model", value="value") == {
        ("haiku_score", "m-a"): 3.0,
        ("haiku_score", "m-b"): 5.0,
    }
    assert [tuple(r.values()) for r in answers["Categories"]] == [
        ("tone", "formal", 2, pytest.approx(2 / 3)),
        ("tone", "casual", 1, pytest.approx(1 / 3)),
    ]
    # Every joined delay is 30 minutes: the bin from 15 minutes to an hour.
    over_range = {r["metric"]: r for r in answers["Feedback delay over the range"]}
    assert {m: r["joined_count"] for m, r in over_range.items()} == {
        "comment": 1,
        "haiku_rating": 5,
        "haiku_score": 3,
        "tone": 3,
    }
    assert all(900 <= r["p50_seconds"] <= 3600 for r in over_range.values())
    assert {r["metric"] for r in answers["Feedback delay"]} == set(over_range)
    assert by(answers["Coverage per model"], "model", value="coverage") == {
        "m-a": 1.0,  # P1 and P3
        "m-b": 0.5,  # P2, not P4
    }
    assert by(answers["Pending and expired"], "metric", value="pending") == {"haiku_rating": 1}
    # haiku_rating items: P1 (judge true, alice true) and P2 (true, false): observed 0.5, and
    # chance 0.5 as well (the judge always says true), so kappa 0; tone: P1 only, (formal,
    # formal), where chance is certain: no kappa.
    cohen = {r["metric"]: r for r in answers["Items compared"]}
    assert {m: (r["items"], r["observed_agreement"]) for m, r in cohen.items()} == {
        "haiku_rating": (2, 0.5),
        "tone": (1, 1.0),
    }
    assert cohen["haiku_rating"]["kappa"] == pytest.approx(0.0)
    assert cohen["tone"]["kappa"] is None
    # Fleiss on haiku_rating: P_1 = 1, P_2 = 0, so 0.5 observed; true is 3 of 4 ratings, so
    # chance is 0.75^2 + 0.25^2 = 0.625: (0.5 - 0.625) / 0.375.
    fleiss = {r["metric"]: r["kappa"] for r in answers["Fleiss' kappa across annotators"]}
    assert fleiss["haiku_rating"] == pytest.approx(-1 / 3)
    (comment,) = answers["Latest comments and demonstrations"]
    assert (comment["value_text"], comment["model"], json.loads(comment["inputs"])) == (
        "too long by a line",
        "m-b",
        {"topic": "topic 2"},
    )


async def test_the_report_draws_what_the_dashboard_reads(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    now = await fill(kafka, database_url, db)
    selection = Selection(now - timedelta(days=7), now + timedelta(minutes=1))
    figure = draw(await read_report(db, selection), "test")
    shares, means, delays, coverage, agreement, backlog = figure.axes
    assert lines(shares) == {"haiku_rating m-a": [1.0], "haiku_rating m-b": [0.5]}
    assert lines(means) == {"haiku_score m-a": [3.0], "haiku_score m-b": [5.0]}
    assert lines(coverage) == {"m-a": [1.0], "m-b": [0.5]}
    assert set(lines(delays)) == {
        f"{metric} {p}"
        for metric in ("comment", "haiku_rating", "haiku_score", "tone")
        for p in ("p50", "p90")
    }
    kappas = lines(agreement)
    assert kappas["haiku_rating Cohen human/llm_judge"] == [pytest.approx(0.0)]
    assert kappas["haiku_rating Fleiss"] == [pytest.approx(-1 / 3)]
    assert lines(backlog)["haiku_rating pending"] == [1.0]

    # The command itself, as a user runs it: a PNG of the figure's size.
    output = tmp_path / "report.png"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).with_name("feedbackflow")),
            "report",
            "--database-url",
            database_url,
            "--since",
            f"{selection.time_from:%Y-%m-%d %H:%M:%S}",
            "--until",
            f"{selection.time_to:%Y-%m-%d %H:%M:%S}",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report: {output}"
    assert imread(output).shape == (900, 1500, 4)


def lines(axes: Any) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_ydata()) for line in axes.get_lines()}
