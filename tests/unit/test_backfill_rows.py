"""Backfill's pure parts: files read with their line numbers, columns mapped to wire format,
ids derived from content that the worker's decoder accepts, the report by reason, checkpoints."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from ingest.backfill.checking import PAST_RETENTION, RowChecker
from ingest.backfill.checkpoint import Checkpoint
from ingest.backfill.mapping import ColumnMapping, MappingError
from ingest.backfill.report import Report
from ingest.backfill.sources import SourceError, SourceRow, format_of, read_rows
from ingest.backfill.stable_ids import derived_id
from ingest.topics import TopicNames
from tests.integration.harness import metric_registry

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOPICS = TopicNames("t")


def _checker(mapping: ColumnMapping | None = None) -> RowChecker:
    return RowChecker(
        mapping or ColumnMapping(), "auto", metric_registry(), TOPICS, timedelta(days=90)
    )


def _rows(*fields: Mapping[str, object]) -> list[SourceRow]:
    return [SourceRow(n, dict(f), "json") for n, f in enumerate(fields, start=1)]


PREDICTION: dict[str, object] = {
    "join_key": "req-1",
    "application": "generate_haiku",
    "timestamp": "2026-11-30T10:00:00+00:00",
    "outputs": {"haiku": "rain"},
}


def test_jsonl_gzip_zstd_and_parquet_rows_come_with_their_line_numbers(tmp_path: Path) -> None:
    lines = b'{"a": 1}\n\n{"a": 2}\n[1]\n'
    (tmp_path / "p.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "p.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    for name in ("p.jsonl.gz", "p.jsonl.zst"):
        rows = list(read_rows(tmp_path / name, format_of(tmp_path / name)))
        assert [(r.line, r.fields, r.problem) for r in rows] == [
            (1, {"a": 1}, None),
            (3, {"a": 2}, None),
            (4, None, "not a JSON object"),
        ]
    pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "p.parquet")
    rows = list(read_rows(tmp_path / "p.parquet", "parquet"))
    assert [(r.line, r.fields) for r in rows] == [(1, {"a": 1}), (2, {"a": 2}), (3, {"a": 3})]


def test_csv_line_numbers_count_quoted_newlines_and_name_a_short_record(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text('a,b\n"x\ny",1\nz\nw,2\n')
    rows = list(read_rows(path, "csv"))
    assert [(r.line, r.fields) for r in rows] == [
        (2, {"a": "x\ny", "b": "1"}),
        (4, None),
        (5, {"a": "w", "b": "2"}),
    ]
    assert rows[1].problem == "fewer values than the header's 2"


def test_a_file_whose_format_cannot_be_told_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="--format"):
        format_of(tmp_path / "history.txt.gz")
    assert format_of(tmp_path / "history.CSV.zst") == "csv"


def test_csv_text_is_typed_by_the_field_and_the_metric() -> None:
    mapping = ColumnMapping.build(
        maps=["join_key=request", "value=thumbs", "timestamp=when"],
        sets=["metric=haiku_rating"],
    )
    row = {
        "request": "req-1",
        "thumbs": "yes",
        "when": "1764583200000",
        "tags": '{"k": "v"}',
        "rationale": "",
    }
    kind, event = mapping.to_wire(row, "text", "auto", metric_registry())
    assert kind == "feedback"
    assert event == {
        "join_key": "req-1",
        "value": True,
        "timestamp": 1764583200000,
        "metric": "haiku_rating",
        "tags": {"k": "v"},
    }


def test_dotted_fields_build_objects_and_unmapped_columns_are_errors_naming_them() -> None:
    mapping = ColumnMapping.build(maps=["inputs.topic=question"], ignored=["row_no"])
    row = {**PREDICTION, "question": "rain", "row_no": 7, "note": "x"}
    batch = _checker(mapping).check(_rows(row), NOW)
    (reject,) = batch.rejects
    assert (reject.line, reject.field) == (1, "note")
    assert "Extra inputs are not permitted" in reject.reason
    del row["note"]
    batch = _checker(mapping).check(_rows(row), NOW)
    assert not batch.rejects
    assert json.loads(batch.accepted[0].value)["inputs"] == {"topic": "rain"}


def test_a_bad_mapping_flag_is_refused_naming_the_flag() -> None:
    with pytest.raises(MappingError, match="--map 'join_key'"):
        ColumnMapping.build(maps=["join_key"])


def test_derived_ids_are_stable_differ_by_content_and_pass_the_decoders_time_rule() -> None:
    first = derived_id("prediction", PREDICTION)
    assert derived_id("prediction", dict(reversed(PREDICTION.items()))) == first
    assert derived_id("prediction", {**PREDICTION, "outputs": {"haiku": "snow"}}) != first
    assert derived_id("feedback", PREDICTION) != first
    assert first.version == 7
    assert first.int >> 80 == int(datetime(2026, 11, 30, 10, tzinfo=UTC).timestamp() * 1000)
    batch = _checker().check(_rows(PREDICTION, PREDICTION), NOW)
    assert not batch.rejects
    ids = {p.prediction_id for p in batch.decoded.predictions}
    assert ids == {first}
    # The SDK keys by join key: the worker's co-partitioning depends on it.
    assert {a.key for a in batch.accepted} == {b"req-1"}


def test_the_files_own_ids_are_kept() -> None:
    given = "01a2274c-db30-773e-be5a-8abdb405a81c"
    row = {**PREDICTION, "prediction_id": given, "timestamp": "2026-11-29T12:34:38+00:00"}
    batch = _checker().check(_rows(row), NOW)
    assert batch.decoded.predictions[0].prediction_id == UUID(given)


def test_the_report_counts_reasons_with_first_lines_and_rows_past_retention() -> None:
    old = {**PREDICTION, "timestamp": (NOW - timedelta(days=91)).isoformat()}
    no_time = {k: v for k, v in PREDICTION.items() if k != "timestamp"}
    rating = {"metric": "haiku_rating", "join_key": "req-1", "value": "yes"}
    rating["timestamp"] = "2026-11-30T10:00:00+00:00"
    rows = _rows(PREDICTION, old, no_time, old, rating, old, old, old, old)
    batch = _checker().check(rows, NOW)
    report = Report()
    report.add(batch, TOPICS.predictions)
    assert (report.predictions, report.feedback, report.bad_rows) == (1, 0, 8)
    assert report.bad[f"timestamp: {PAST_RETENTION}"] == [6, [2, 4, 6, 7, 8]]
    assert report.past_retention == 6
    text = report.render("f.jsonl", "checked")
    assert "6 bad: timestamp: older than the retention (line 2, 4, 6, 7, 8, ...)" in text
    assert "1 bad: value: metric 'haiku_rating' is boolean; got a string (line 5)" in text
    assert "1 bad: timestamp: is required in a backfill" in text


def test_a_checkpoint_resumes_its_own_file_only(tmp_path: Path) -> None:
    source = tmp_path / "f.jsonl"
    source.write_text("{}\n")
    checkpoint = Checkpoint.beside(source)
    assert checkpoint.report is not None
    checkpoint.report.predictions = 4
    checkpoint.save(rows_done=5, rejects_bytes=12)
    again = Checkpoint.beside(source)
    assert (again.rows_done, again.rejects_bytes) == (5, 12)
    assert again.report is not None
    assert again.report.predictions == 4
    source.write_text("{}\n{}\n")
    assert Checkpoint.beside(source).rows_done == 0


def test_parquet_times_maps_and_structs_become_wire_json(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    naive = datetime(2026, 11, 30, 10, 0)
    pq.write_table(
        pa.table(
            {
                "join_key": ["req-1", "req-2"],
                "application": ["generate_haiku"] * 2,
                "model": ["m", None],
                "timestamp": pa.array([naive, naive], pa.timestamp("ms")),
                "tags": pa.array([[("env", "prod")], []], pa.map_(pa.string(), pa.string())),
                "inputs": [
                    {"topic": "rain", "temperature": None},
                    {"topic": "", "temperature": 0.5},
                ],
            }
        ),
        path,
    )
    batch = _checker().check(list(read_rows(path, "parquet")), NOW)
    assert not batch.rejects
    first, second = (json.loads(a.value) for a in batch.accepted)
    assert first["timestamp"] == "2026-11-30T10:00:00+00:00"  # naive Parquet times are UTC
    assert first["tags"] == {"env": "prod"}
    assert first["inputs"] == {"topic": "rain", "temperature": None}
    assert "model" not in second  # null: absent
    assert second["inputs"] == {"topic": "", "temperature": 0.5}  # nested values as they are
    assert second["tags"] == {}
