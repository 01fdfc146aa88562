"""The ids a backfill derives for rows without one must not change between versions: a file
backfilled again by a newer feedbackflow must add nothing.  These ids were printed by the
backfill before its Parquet reading and checking were made faster (the commit after 3960617),
from the same sample: JSONL, a CSV under other column names, and Parquet with the Arrow types
that are not JSON's (times with and without a zone, maps, binary UUIDs, dates, decimals)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.backfill.checking import RowChecker
from ingest.backfill.mapping import ColumnMapping
from ingest.backfill.sources import read_rows
from ingest.topics import TopicNames
from tests.integration.harness import metric_registry

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
START = datetime(2026, 11, 20, 8, 30, 15, 250_000, tzinfo=UTC)


def _write_sample(folder: Path) -> dict[str, tuple[Path, ColumnMapping]]:
    jsonl = folder / "predictions.jsonl"
    with jsonl.open("w") as out:
        for i in range(6):
            row = {
                "join_key": f"req-{i}",
                "application": "generate_haiku",
                "inputs": {"topic": f"t{i}", "temperature": 0.25 * i, "n": i},
                "outputs": {"haiku": f"h\u00e9 {i}"},
                "tags": {"env": "prod"} if i % 2 else {},
                "timestamp": (START + timedelta(minutes=i)).isoformat()
                if i % 3
                else int((START + timedelta(minutes=i)).timestamp() * 1000),
            }
            out.write(json.dumps(row) + "\n")
    csv_path = folder / "ratings.csv"
    csv_path.write_text(
        "request,thumbs,rated_at,who,meta\n"
        + "".join(
            f"req-{i},{'yes' if i % 2 else 'no'},{(START + timedelta(hours=i)).isoformat()},"
            f'ann-{i},"{{""ui"": ""v{i}""}}"\n'
            for i in range(4)
        )
    )
    ratings = ColumnMapping.build(
        maps=[
            "join_key=request",
            "value=thumbs",
            "timestamp=rated_at",
            "source.id=who",
            "metadata=meta",
        ],
        sets=["metric=haiku_rating", "source.type=human"],
    )
    parquet = folder / "scores.parquet"
    n = 5
    pq.write_table(
        pa.table(
            {
                "prediction_id": pa.array(
                    [UUID(int=(0x0192 << 112) | (7 << 76) | (2 << 62) | i).bytes for i in range(n)],
                    pa.binary(16),
                ),
                "metric": ["haiku_score"] * n,
                "value": [float(1 + i) for i in range(n)],
                "timestamp": pa.array(
                    [START + timedelta(seconds=i, microseconds=i) for i in range(n)],
                    pa.timestamp("us", tz="UTC"),
                ),
                "metadata": pa.array(
                    [[("day", str(date(2026, 11, 1 + i)))] for i in range(n)],
                    pa.map_(pa.string(), pa.string()),
                ),
                "rationale": [f"because {i}" for i in range(n)],
            }
        ),
        parquet,
    )
    naive = folder / "predictions.parquet"
    pq.write_table(
        pa.table(
            {
                "join_key": [f"p-{i}" for i in range(n)],
                "application": ["a"] * n,
                "timestamp": pa.array(
                    [(START + timedelta(minutes=i)).replace(tzinfo=None) for i in range(n)],
                    pa.timestamp("ms"),
                ),
                "inputs": [
                    {"day": date(2026, 11, 1 + i), "price": Decimal(f"{i}.5")} for i in range(n)
                ],
                "tags": pa.array(
                    [[("env", "prod")], [], [], [], []], pa.map_(pa.string(), pa.string())
                ),
            }
        ),
        naive,
    )
    return {
        "predictions.jsonl": (jsonl, ColumnMapping()),
        "ratings.csv": (csv_path, ratings),
        "scores.parquet": (parquet, ColumnMapping()),
        "predictions.parquet": (naive, ColumnMapping()),
    }


def derived_ids(folder: Path) -> dict[str, list[str]]:
    ids = {}
    for name, (path, mapping) in _write_sample(folder).items():
        checker = RowChecker(
            mapping, "auto", metric_registry(), TopicNames("t"), timedelta(days=90)
        )
        fmt = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}[path.suffix[1:]]
        batch = checker.check(list(read_rows(path, fmt)), NOW)  # type: ignore[arg-type]
        assert not batch.rejects, batch.rejects
        ids[name] = [
            json.loads(a.value).get("prediction_id" if "prediction" in name else "feedback_id")
            for a in batch.accepted
        ]
    return ids


# Printed by the backfill of 3960617 from this sample (see the module"s docstring).
BEFORE = {
    "predictions.jsonl": [
        "01a1f813-e2d2-799e-bfac-20edd0098412",
        "01a1f814-cd32-74ef-8224-e71e358ffd46",
        "01a1f815-b792-7586-9f33-18ad67656420",
        "01a1f816-a1f2-7cb1-8a82-d5b486e2bb3a",
        "01a1f817-8c52-7058-bf7e-96714245297e",
        "01a1f818-76b2-756e-af71-c88868666348",
    ],
    "ratings.csv": [
        "01a1f813-e2d2-7cc5-8c03-4f5e27c01e93",
        "01a1f84a-d152-7006-87e0-0c69af17e4f7",
        "01a1f881-bfd2-7c80-a56f-56724c98c8b2",
        "01a1f8b8-ae52-79d8-9547-adaa8262511a",
    ],
    "scores.parquet": [
        "01a1f813-e2d2-75e8-8f0c-eec042874b7a",
        "01a1f813-e6ba-766a-916a-4b35e412a891",
        "01a1f813-eaa2-77ef-a2a4-cb8a8097fc00",
        "01a1f813-ee8a-7f9c-803a-ca5f6236106b",
        "01a1f813-f272-70a1-b0a2-47c637ac6dc3",
    ],
    "predictions.parquet": [
        "01a1f813-e2d2-76e4-b25b-f8b9d5df3708",
        "01a1f814-cd32-7f20-9760-ecd402a5c928",
        "01a1f815-b792-7e64-8e9c-f8fbcf21b3fd",
        "01a1f816-a1f2-700e-9cc2-1603f3761b43",
        "01a1f817-8c52-7120-bd6d-a9cc8d9292cd",
    ],
}


def test_the_ids_derived_from_a_sample_are_those_of_the_version_before(tmp_path: Path) -> None:
    assert derived_ids(tmp_path) == BEFORE
