"""Export over a real Postgres: current values with each filter, ``--as-of`` before and after a
revision, the training shapes (rated positive, demonstrated, chat messages), and every format
read back."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow.parquet as pq

from ingest.backfill.mapping import ColumnMapping
from ingest.backfill.run import BackfillOptions, backfill
from tests.integration.harness import isolated_settings, metric_registry
from tests.integration.test_backfill import run_command
from workers.export.run import ExportOptions, export
from workers.read_model.current_feedback import FeedbackFilter

START = (datetime.now(UTC) - timedelta(days=20)).replace(microsecond=0)
REVISED_AT = START + timedelta(days=2)
# --direct backfills here: no broker is asked.
NO_BROKER = "127.0.0.1:1"

CONFIG = """
[metrics.haiku_rating]
type = "boolean"
level = "inference"

[metrics.haiku_score]
type = "float"
min = 1
max = 5
"""


def at(hours: float) -> str:
    return (START + timedelta(hours=hours)).isoformat()


def sample() -> list[dict[str, Any]]:
    """Four predictions (two models, two teams), ratings by two annotators with one revision,
    a judge's scores, a demonstration and an orphan rating."""
    rows: list[dict[str, Any]] = []
    for i in range(4):
        rows.append(
            {
                "kind": "prediction",
                "join_key": f"req-{i}",
                "application": "generate_haiku",
                "model": f"haiku-{'ab'[i % 2]}",
                "inputs": {
                    "system": "be brief",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                },
                "outputs": {"content": f"a{i}"},
                "tags": {"team": "poetry" if i < 2 else "prose"},
                "timestamp": at(i),
            }
        )

    def rating(key: str, value: bool, source: str, hours: float) -> dict[str, Any]:
        return {
            "metric": "haiku_rating",
            "join_key": key,
            "value": value,
            "source": {"type": "human", "id": source},
            "timestamp": at(hours),
        }

    rows += [
        rating("req-0", True, "ann-1", 10),
        rating("req-0", True, "ann-2", 11),  # two positives on one prediction: one example
        rating("req-1", False, "ann-1", 10),
        rating("req-2", True, "ann-1", 10),
        # ann-1 changes their mind on req-2 two days in: the current value from then on.
        rating("req-2", False, "ann-1", 48),
        rating("req-orphan", True, "ann-1", 10),
    ]
    for i in range(4):
        rows.append(
            {
                "metric": "haiku_score",
                "join_key": f"req-{i}",
                "value": 1.0 + i,
                "source": {"type": "llm_judge", "id": "judge-v1"},
                "tags": {"rubric": "imagery"},
                "timestamp": at(20 + i),
            }
        )
    rows.append(
        {"metric": "demonstration", "join_key": "req-1", "value": "better a1", "timestamp": at(30)}
    )
    return rows


async def loaded(database_url: str, folder: Path) -> None:
    source = folder / "sample.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in sample()))
    settings = isolated_settings(NO_BROKER, database_url)
    options = BackfillOptions([source], ColumnMapping(), direct=True, progress=False)
    assert await backfill(settings, metric_registry(), options) == 0


async def records(database_url: str, folder: Path, **given: Any) -> list[dict[str, Any]]:
    out = folder / "out.jsonl"
    where = given.pop("where", FeedbackFilter())
    await export(database_url, ExportOptions(where, output=out, **given))
    return [json.loads(line) for line in out.read_text().splitlines()]


async def test_filters_select_current_values(database_url: str, tmp_path: Path) -> None:
    await loaded(database_url, tmp_path)

    async def targets(**where: Any) -> list[tuple[str, str, Any]]:
        found = await records(database_url, tmp_path, where=FeedbackFilter(**where))
        return [(r["metric"], r["target"], r["value"]) for r in found]

    everything = await targets()
    # 5 current ratings (the revision replaced one), 4 scores, 1 demonstration.
    assert len(everything) == 10
    assert ("haiku_rating", "req-2", True) not in everything
    assert ("haiku_rating", "req-2", False) in everything
    assert await targets(metrics=["haiku_score"], models=["haiku-b"]) == [
        ("haiku_score", "req-1", 2.0),
        ("haiku_score", "req-3", 4.0),
    ]
    assert await targets(statuses=["pending"]) == [("haiku_rating", "req-orphan", True)]
    assert await targets(source_types=["human"], source_ids=["ann-2"]) == [
        ("haiku_rating", "req-0", True)
    ]
    # Prediction tags: req-2's and req-3's scores, then req-2's revised rating (hour 48).
    assert await targets(tags={"team": "prose"}) == [
        ("haiku_score", "req-2", 3.0),
        ("haiku_score", "req-3", 4.0),
        ("haiku_rating", "req-2", False),
    ]
    assert len(await targets(tags={"rubric": "imagery"})) == 4
    window = await targets(since=START + timedelta(hours=21), until=START + timedelta(hours=23))
    assert window == [("haiku_score", "req-1", 2.0), ("haiku_score", "req-2", 3.0)]
    assert len(await records(database_url, tmp_path, limit=3)) == 3


async def test_as_of_gives_the_values_before_a_revision_and_after_it(
    database_url: str, tmp_path: Path
) -> None:
    await loaded(database_url, tmp_path)

    async def req_2_rating(as_of: datetime) -> list[Any]:
        where = FeedbackFilter(metrics=["haiku_rating"], as_of=as_of)
        return [
            r["value"]
            for r in await records(database_url, tmp_path, where=where)
            if r["target"] == "req-2"
        ]

    assert await req_2_rating(REVISED_AT - timedelta(hours=1)) == [True]
    assert await req_2_rating(REVISED_AT) == [False]
    assert await req_2_rating(START) == []


async def test_a_retraction_withdraws_the_value_it_revises_from_then_on(
    database_url: str, tmp_path: Path
) -> None:
    await loaded(database_url, tmp_path)
    retraction = {
        "metric": "haiku_rating",
        "join_key": "req-0",
        "retracted": True,
        "source": {"type": "human", "id": "ann-1"},
        "timestamp": at(60),
    }
    source = tmp_path / "retraction.jsonl"
    source.write_text(json.dumps(retraction) + "\n")
    settings = isolated_settings(NO_BROKER, database_url)
    options = BackfillOptions([source], ColumnMapping(), direct=True, progress=False)
    assert await backfill(settings, metric_registry(), options) == 0

    async def req_0_sources(as_of: datetime | None = None) -> list[str]:
        where = FeedbackFilter(metrics=["haiku_rating"], as_of=as_of)
        found = await records(database_url, tmp_path, where=where)
        return sorted(r["source_id"] for r in found if r["target"] == "req-0")

    assert await req_0_sources() == ["ann-2"]
    assert await req_0_sources(START + timedelta(hours=59)) == ["ann-1", "ann-2"]


async def test_training_shapes_rated_positive_demonstrated_and_chat(
    database_url: str, tmp_path: Path
) -> None:
    await loaded(database_url, tmp_path)
    config = tmp_path / "feedbackflow.toml"
    config.write_text(CONFIG)
    base = [sys.executable, "-m", "workers.cli", "export", "--config", str(config)]
    base += ["--database-url", database_url]

    async def shaped(*flags: str) -> list[dict[str, Any]]:
        out = tmp_path / "shaped.jsonl"
        code, said = await run_command([*base, *flags, "-o", str(out)])
        assert code == 0, said
        return [json.loads(line) for line in out.read_text().splitlines()]

    positive = await shaped("--shape", "examples", "--metric", "haiku_rating")
    # req-0 (two annotators, one example); req-2 was revised to negative; the orphan has no
    # prediction.
    assert [e["outputs"] for e in positive] == [{"content": "a0"}]
    assert positive[0]["inputs"]["messages"] == [{"role": "user", "content": "q0"}]
    demonstrated = await shaped("--shape", "examples", "--metric", "demonstration")
    assert [(e["prediction_id"] != "", e["outputs"]) for e in demonstrated] == [
        (True, {"content": "better a1"})
    ]
    chat = await shaped("--shape", "messages", "--metric", "demonstration")
    assert chat == [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "better a1"},
            ]
        }
    ]
    code, said = await run_command([*base, "--shape", "examples", "--metric", "haiku_score"])
    assert code == 2
    assert "one --metric, boolean" in said


async def test_csv_and_parquet_hold_the_same_records_as_jsonl(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await loaded(database_url, tmp_path)
    jsonl = await records(database_url, tmp_path, with_predictions=True)
    as_csv, as_parquet = tmp_path / "out.csv", tmp_path / "out.parquet"
    everything = FeedbackFilter()
    await export(database_url, ExportOptions(everything, "rows", "csv", as_csv, True))
    await export(database_url, ExportOptions(everything, "rows", "parquet", as_parquet, True))
    from_csv = list(csv.DictReader(io.StringIO(as_csv.read_text())))
    table = pq.read_table(as_parquet).to_pylist()
    assert [r["feedback_id"] for r in from_csv] == [r["feedback_id"] for r in jsonl]
    assert [r["feedback_id"] for r in table] == [r["feedback_id"] for r in jsonl]
    # The first record with a prediction (rows of one hour are ordered by their ids, which
    # change with the run's time: the orphan may come first).
    first = next(i for i, r in enumerate(jsonl) if r["inputs"] is not None)
    assert json.loads(from_csv[first]["inputs"]) == jsonl[first]["inputs"]
    assert table[0]["ts"].isoformat() == jsonl[0]["ts"]
    assert table[0]["delay_seconds"] == jsonl[0]["delay_seconds"]
