"""The read model through the real pipeline (SDK -> tansu -> worker -> Postgres): the rollups the
windows maintain equal a rebuild from the tables, and the queries answer what was worked out by
hand from the events sent.

The events, all of their feedback in one hour H (t0 = H + 5 min), two windows apart:

first window: predictions P1 (model m-a), P2 (m-b) at t0 - 30 min; haiku_rating by alice
(human) and the judge (llm_judge) on P1 (true, true) and P2 (false, false); haiku_score on P1
from alice (2.0) and from an anonymous source (4.0), a judge error on P2; tone on P1 from alice
(formal) and the judge (casual); on P2 alice's tone twice in the window (formal, then casual a
minute later: casual wins); a comment on P1; bob's haiku_rating on join key rm-3, whose
prediction is not there yet (pending).

second window: alice revises P1's rating to false (t0 + 10 min: supersedes), sends an OLDER
rating for P2 (t0 - 5 min: nothing), retracts her P1 score (t0 + 10 min); carol rates a
prediction whose UUIDv7 id says it is past retention (expired); P3 (m-a, join key rm-3, at
t0 - 5 h) arrives and bob's rating joins it; P4 (m-b) gets no feedback.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ingest.sdk.producer import uuid7
from tests.grafana_sql import interpolate
from tests.integration.harness import count, live_pipeline, wait_for_count, wait_for_read_model
from tests.integration.read_model_checks import read_model_state, rebuilt_state
from workers.devstack.servers import TansuBroker
from workers.read_model import queries
from workers.read_model.queries import Selection

ALICE = {"type": "human", "id": "alice"}
BOB = {"type": "human", "id": "bob"}
CAROL = {"type": "human", "id": "carol"}
JUDGE = {"type": "llm_judge", "id": "judge"}
JUDGE_V2 = {"type": "llm_judge", "id": "judge-v2"}


def hour_before(now: datetime, hours: int) -> datetime:
    return (now - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


async def test_rollups_kept_by_the_windows_equal_the_rebuild_and_the_known_answers(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    hour = hour_before(now, 3)
    t0 = hour + timedelta(minutes=5)
    async with live_pipeline(kafka.bootstrap, database_url, partitions=1) as live:
        ff = live.ff
        p1 = await ff.log_prediction(
            application="haiku", model="m-a", timestamp=t0 - timedelta(minutes=30)
        )
        p2 = await ff.log_prediction(
            application="haiku", model="m-b", timestamp=t0 - timedelta(minutes=30)
        )
        on_p1: dict[str, Any] = {"prediction_id": p1.prediction_id, "timestamp": t0}
        on_p2: dict[str, Any] = {"prediction_id": p2.prediction_id, "timestamp": t0}
        await ff.log_feedback(metric="haiku_rating", value=True, source=ALICE, **on_p1)
        await ff.log_feedback(metric="haiku_rating", value=True, source=JUDGE, **on_p1)
        await ff.log_feedback(metric="haiku_rating", value=False, source=ALICE, **on_p2)
        await ff.log_feedback(metric="haiku_rating", value=False, source=JUDGE, **on_p2)
        await ff.log_feedback(metric="haiku_score", value=2.0, source=ALICE, **on_p1)
        await ff.log_feedback(metric="haiku_score", value=4.0, **on_p1)
        await ff.log_feedback(
            metric="haiku_score",
            error={"code": "timeout", "message": "judge timed out"},
            source=JUDGE_V2,
            **on_p2,
        )
        await ff.log_feedback(metric="tone", value="formal", source=ALICE, **on_p1)
        await ff.log_feedback(metric="tone", value="casual", source=JUDGE, **on_p1)
        await ff.log_feedback(metric="tone", value="formal", source=ALICE, **on_p2)
        await ff.log_feedback(
            metric="tone",
            value="casual",
            source=ALICE,
            prediction_id=p2.prediction_id,
            timestamp=t0 + timedelta(minutes=1),
        )
        await ff.log_feedback(metric="comment", value="lovely", source=ALICE, **on_p1)
        await ff.log_feedback(
            metric="haiku_rating",
            value=True,
            source=BOB,
            join_key="rm-3",
            timestamp=t0 + timedelta(minutes=1),
        )
        await ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.feedback", 13)
        await wait_for_read_model(db)
        assert await count(db, "SELECT count(*) FROM feedbackflow.pending_feedback") == 1

        whole_hour = Selection(hour, hour + timedelta(hours=1), grain="1h")
        waiting = await queries.backlog(db, whole_hour)
        assert [(r.metric, r.pending_count) for r in waiting] == [("haiku_rating", 1)]
        first = await read_model_state(db)
        assert first == await rebuilt_state(db)

        await ff.log_feedback(
            metric="haiku_rating",
            value=False,
            source=ALICE,
            prediction_id=p1.prediction_id,
            timestamp=t0 + timedelta(minutes=10),
        )
        await ff.log_feedback(
            metric="haiku_rating",
            value=True,
            source=ALICE,
            prediction_id=p2.prediction_id,
            timestamp=t0 - timedelta(minutes=5),
        )
        await ff.log_feedback(
            metric="haiku_score",
            retracted=True,
            source=ALICE,
            prediction_id=p1.prediction_id,
            timestamp=t0 + timedelta(minutes=10),
        )
        past_retention = uuid7(int((now - timedelta(days=100)).timestamp() * 1000))
        await ff.log_feedback(
            metric="haiku_rating",
            value=True,
            source=CAROL,
            prediction_id=past_retention,
            timestamp=t0 + timedelta(minutes=2),
        )
        await ff.log_prediction(
            application="haiku", model="m-a", join_key="rm-3", timestamp=t0 - timedelta(hours=5)
        )
        await ff.log_prediction(
            application="haiku", model="m-b", timestamp=t0 - timedelta(minutes=30)
        )
        await ff.flush()
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.feedback", 17)
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 16
        )
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 4)
        await wait_for_read_model(db)

    maintained = await read_model_state(db)
    assert maintained == await rebuilt_state(db)
    assert maintained != first

    volume = {r.metric: r for r in await queries.feedback_volume(db, whole_hour)}
    assert {
        m: (r.feedback_count, r.joined_count, r.pending_count, r.expired_count, r.error_count)
        for m, r in volume.items()
    } == {
        # P1: alice's revision and the judge; P2: alice (her older rating changes nothing) and
        # the judge; bob's, joined now; carol's, expired.
        "haiku_rating": (6, 5, 0, 1, 0),
        # alice's 2.0 retracted: the anonymous 4.0 and the judge's error.
        "haiku_score": (2, 2, 0, 0, 1),
        "tone": (3, 3, 0, 0, 0),
        "comment": (1, 1, 0, 0, 0),
    }

    values = {
        (r.metric, r.model): (r.value_count, r.value)
        for r in await queries.metric_values(db, whole_hour)
    }
    assert values == {
        ("haiku_rating", "m-a"): (3, pytest.approx(2 / 3)),  # alice false, judge true, bob true
        ("haiku_rating", "m-b"): (2, 0.0),
        ("haiku_score", "m-a"): (1, 4.0),
    }

    tones = await queries.category_distribution(db, whole_hour)
    assert [(r.category, r.feedback_count) for r in tones] == [("casual", 2), ("formal", 1)]
    assert [r.share for r in tones] == pytest.approx([2 / 3, 1 / 3])

    # haiku_rating's joined delays: 30, 30, 30 and 40 min (bin 15 min..1 h), and bob's 5 h 1 min
    # (bin 1 h..6 h): p50 at rank 2.5 of 4 in the first, p90 at 0.5 of 1 in the second.
    delays = {r.metric: r for r in await queries.delay_percentiles(db, whole_hour)}
    rating = delays["haiku_rating"]
    assert rating.joined_count == 5
    assert rating.p50_seconds == pytest.approx(900 + 2700 * 2.5 / 4)
    assert rating.p90_seconds == pytest.approx(3600 + 18000 * 0.5)
    assert rating.p99_seconds == pytest.approx(3600 + 18000 * 0.95)
    over_time = await queries.delay_percentiles_over_time(db, whole_hour)
    assert [(r.time, r.joined_count) for r in over_time if r.metric == "haiku_rating"] == [
        (hour, 5)
    ]

    covered: dict[str | None, tuple[int, int]] = {}
    since_p3 = Selection(t0 - timedelta(hours=6), now + timedelta(minutes=1))
    for r in await queries.coverage(db, since_p3):
        before = covered.get(r.model, (0, 0))
        covered[r.model] = (before[0] + r.predictions, before[1] + r.with_feedback)
    assert covered == {"m-a": (2, 2), "m-b": (2, 1)}

    backlog = await queries.backlog(db, whole_hour)
    assert [(r.metric, r.pending_count, r.expired_count) for r in backlog] == [
        ("haiku_rating", 0, 1)
    ]

    # Items rated by two sources: P1's rating (alice false, judge true) and P2's (both false);
    # P1's tone (formal, casual).  Worked out in the module's unit test of the formulas.
    cohen = {r.metric: r for r in await queries.cohen_kappa(db, whole_hour, "llm_judge", "human")}
    assert (cohen["haiku_rating"].items, cohen["haiku_rating"].observed_agreement) == (2, 0.5)
    assert cohen["haiku_rating"].kappa == pytest.approx(0.0)
    assert (cohen["tone"].items, cohen["tone"].observed_agreement) == (1, 0.0)
    fleiss = {r.metric: r for r in await queries.fleiss_kappa(db, whole_hour)}
    assert (fleiss["haiku_rating"].items, fleiss["haiku_rating"].ratings) == (2, 4)
    assert fleiss["haiku_rating"].kappa == pytest.approx(-1 / 3)
    assert fleiss["tone"].items == 1
    assert fleiss["tone"].kappa == pytest.approx(-1.0)

    comments = await queries.latest_comments(db, whole_hour, limit=5)
    assert [(c.value_text, c.model, c.inputs) for c in comments] == [("lovely", "m-a", {})]

    # The same queries as Grafana sends them (its macros and variables expanded), same rows.
    for query, rows in (
        (queries.FEEDBACK_VOLUME, len(volume)),
        (queries.COHEN_KAPPA, len(cohen)),
        (queries.LATEST_COMMENTS, len(comments)),
    ):
        assert len(await db.fetch(as_grafana_sends(query, whole_hour))) == rows


def as_grafana_sends(query: queries.Query, selection: Selection) -> str:
    """The panel SQL with Grafana's expansion (tests.grafana_sql): every value of each variable,
    quoted, source types llm_judge and human, a limit of 5; the selection's grain."""
    text = query.for_grafana({"grain": f"'{selection.grain}'", "limit": "5"})
    return interpolate(
        text,
        selection.time_from,
        selection.time_to,
        {
            "application": ["haiku"],
            "model": ["m-a", "m-b"],
            "metric": ["haiku_rating", "haiku_score", "tone", "comment"],
            "source_type_a": ["llm_judge"],
            "source_type_b": ["human"],
        },
    )


async def test_the_rebuild_command_recomputes_what_was_lost(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    async with live_pipeline(kafka.bootstrap, database_url) as live:
        prediction = await live.ff.log_prediction(application="haiku", model="m-a")
        await live.ff.log_feedback(
            metric="haiku_rating", prediction_id=prediction.prediction_id, value=True, source=BOB
        )
        await live.ff.flush()
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
        await wait_for_read_model(db)
    kept = await read_model_state(db)
    await db.execute("TRUNCATE feedbackflow.feedback_rollup, feedbackflow.feedback_heads")
    assert await read_model_state(db) != kept
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "workers.cli",
            "read-model",
            "rebuild",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "feedback_rollup 3 rows" in result.stdout  # one row per grain
    assert await read_model_state(db) == kept
