"""Records out as JSONL, CSV or Parquet, written as they come: memory is one Parquet row group
(or one record) whatever the export's size.

Every record of an export has the same fields (``workers.export.shapes.fields_of``), which
CSV's header and Parquet's schema are made from.  CSV and Parquet hold objects (inputs, tags, a
JSON value) as JSON text; Parquet types the times and the delay.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, BinaryIO, Literal, Protocol

Format = Literal["jsonl", "csv", "parquet"]
# A Parquet row group's rows are held as Python lists until written: the export's peak memory
# follows this (50,000 rows peaked about 60 MB higher: docs/performance.md).
PARQUET_ROW_GROUP = 20_000
_TIMES = frozenset({"ts", "prediction_ts"})
_NUMBERS = frozenset({"delay_seconds"})


class RecordWriter(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def open_writer(fmt: Format, out: BinaryIO, fields: Sequence[str]) -> RecordWriter:
    if fmt == "jsonl":
        return JsonlWriter(out)
    if fmt == "csv":
        return CsvWriter(out, fields)
    return ParquetWriter(out, fields)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class JsonlWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=False)

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(_json(record) + "\n")

    def close(self) -> None:
        self.out.flush()
        self.out.detach()


class CsvWriter:
    def __init__(self, out: BinaryIO, fields: Sequence[str]) -> None:
        self.out = io.TextIOWrapper(out, encoding="utf-8", newline="")
        self.fields = list(fields)
        self.csv = csv.writer(self.out)
        self.csv.writerow(self.fields)

    def write(self, record: dict[str, Any]) -> None:
        self.csv.writerow([_cell(record[name]) for name in self.fields])

    def close(self) -> None:
        self.out.flush()
        self.out.detach()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list | bool):
        return _json(value)
    return value


class ParquetWriter:
    def __init__(self, out: BinaryIO, fields: Sequence[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # The C allocator, as the backfill's reader uses (ingest.backfill.sources): Arrow's
        # mimalloc kept what each written row group had freed.
        pa.set_memory_pool(pa.system_memory_pool())
        self.pa = pa
        self.fields = list(fields)
        self.schema = pa.schema([(name, _arrow_type(pa, name)) for name in self.fields])
        self.writer = pq.ParquetWriter(out, self.schema, compression="zstd")
        self.columns: dict[str, list[Any]] = {name: [] for name in self.fields}
        self.rows = 0

    def write(self, record: dict[str, Any]) -> None:
        for name in self.fields:
            self.columns[name].append(_parquet_value(name, record[name]))
        self.rows += 1
        if self.rows >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.table(self.columns, schema=self.schema))
            self.columns = {name: [] for name in self.fields}
            self.rows = 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


def _arrow_type(pa: Any, name: str) -> Any:
    if name in _TIMES:
        return pa.timestamp("us", tz="UTC")
    if name in _NUMBERS:
        return pa.float64()
    return pa.string()


def _parquet_value(name: str, value: Any) -> Any:
    if value is None or name in _NUMBERS:
        return value
    if name in _TIMES:
        return datetime.fromisoformat(value) if isinstance(value, str) else value
    return value if isinstance(value, str) else _json(value)
