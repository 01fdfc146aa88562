"""Rows out of a backfill file: JSONL, CSV or Parquet, gzip- or zstd-compressed or not.

Each row comes with its line number as a person finds it in the file (JSONL: the line; CSV: the
line the record starts on, the header being line 1; Parquet: the row's position from 1), since
that is what the dry-run report and the reject file name.  Files are read as a stream, one
record or one Parquet batch at a time, so memory does not grow with the file.

Every row's values come out as JSON's: a Parquet batch is turned into Python column by column,
and only the columns whose Arrow type is not JSON's (times, maps, binary, decimals) are converted
value by value; the rest are used as pyarrow gives them, which is most of a backfill's reading
time saved (docs/performance.md).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple
from uuid import UUID

import zstandard

Format = Literal["jsonl", "csv", "parquet"]
# What a row's values are: JSON's already (JSONL, and Parquet once read), or text to be typed
# (CSV).
Values = Literal["json", "text"]
_COMPRESSIONS = (".gz", ".zst", ".zstd")
_SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
PARQUET_BATCH_ROWS = 10_000


class SourceError(ValueError):
    """The file as a whole cannot be read (unknown format, unreadable): no row can be."""


class SourceRow(NamedTuple):
    """One record of the file.  ``fields`` is None when the record is not an object at all
    (bad JSON), and ``problem`` then says why.  A tuple: one is made per row, and a frozen
    dataclass's constructor costs several times more."""

    line: int
    fields: dict[str, Any] | None
    values: Values
    problem: str | None = None


def format_of(path: Path, given: Format | None = None) -> Format:
    """The file's format: ``given``, else from its suffix under any compression suffix."""
    if given is not None:
        return given
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    found = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise SourceError(
            f"{path}: cannot tell the format from the name; use --format jsonl|csv|parquet"
        )
    return found


def open_decompressed(path: Path) -> BinaryIO:
    """The file's bytes, decompressed by what its first bytes say (not its name)."""
    with path.open("rb") as probe:
        magic = probe.read(4)
    if magic.startswith(GZIP_MAGIC):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    raw = path.open("rb")
    if magic == ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return raw


def read_rows(path: Path, fmt: Format) -> Iterator[SourceRow]:
    if fmt == "parquet":
        yield from _parquet_rows(path)
        return
    with open_decompressed(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        yield from _jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text)


def row_count(path: Path, fmt: Format) -> int | None:
    """Rows in the file when that is known without reading it (Parquet's footer), else None."""
    if fmt != "parquet":
        return None
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _jsonl_rows(text: io.TextIOWrapper) -> Iterator[SourceRow]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield SourceRow(number, None, "json", f"invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(value, dict):
            yield SourceRow(number, None, "json", "not a JSON object")
            continue
        yield SourceRow(number, value, "json")


def _csv_rows(text: io.TextIOWrapper) -> Iterator[SourceRow]:
    reader = csv.DictReader(text, strict=True)
    start = 2  # the line the next record starts on (the header is line 1)
    try:
        for record in reader:
            columns = len(reader.fieldnames or [])
            if None in record:
                yield SourceRow(start, None, "text", f"more values than the header's {columns}")
            elif any(value is None for value in record.values()):
                yield SourceRow(start, None, "text", f"fewer values than the header's {columns}")
            else:
                yield SourceRow(start, dict(record), "text")
            start = reader.line_num + 1
    except csv.Error as exc:
        raise SourceError(f"line {reader.line_num}: CSV cannot be read on: {exc}") from None


def _parquet_rows(path: Path) -> Iterator[SourceRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The C allocator instead of Arrow's mimalloc: batches are read from the thread pool's
    # threads, and mimalloc kept each thread's freed batches, a tenth of a run's peak memory
    # (docs/performance.md).
    pa.set_memory_pool(pa.system_memory_pool())
    number = 0
    # Without pre-buffering: with it, the reader kept the column chunks it had read, and a
    # file's run grew with the file (docs/performance.md).
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        schema = parquet.schema_arrow
        names = schema.names
        # Maps as dicts is several times slower per row: only for a file that has one.
        maps = "strict" if any(_has_map(f.type) for f in schema) else None
        converted = [not _json_native(f.type) for f in schema]
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            columns = [
                [json_value(v) for v in column.to_pylist(maps_as_pydicts=maps)]
                if convert
                else column.to_pylist()
                for column, convert in zip(batch.columns, converted, strict=True)
            ]
            for values in zip(*columns, strict=True):
                number += 1
                yield SourceRow(number, dict(zip(names, values, strict=True)), "json")


def _json_native(arrow_type: Any) -> bool:
    """Whether pyarrow's Python values of this type are JSON's as they are (text, numbers,
    booleans, and structs and lists of those)."""
    import pyarrow as pa

    t = pa.types
    if t.is_struct(arrow_type):
        return all(_json_native(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if t.is_list(arrow_type) or t.is_large_list(arrow_type):
        return bool(_json_native(arrow_type.value_type))
    return bool(
        t.is_string(arrow_type)
        or t.is_large_string(arrow_type)
        or t.is_integer(arrow_type)
        or t.is_floating(arrow_type)
        or t.is_boolean(arrow_type)
        or t.is_null(arrow_type)
    )


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def json_value(value: Any) -> Any:
    """Arrow's Python values as JSON's: times as RFC 3339 (naive ones are UTC, as Parquet's own
    timestamps usually are), UUIDs as text; maps are dicts already.  JSON's own types return at
    once."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return value
    if kind is dict:
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes) and len(value) == 16:
        return str(UUID(bytes=value))
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def _has_map(arrow_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_map(arrow_type):
        return True
    if pa.types.is_struct(arrow_type):
        return any(_has_map(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _has_map(arrow_type.value_type)
    return False
