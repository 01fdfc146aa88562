"""``feedbackflow export``: current feedback from the read model, shaped, written as it streams.

Rows come through a server-side cursor (``workers.read_model.current_feedback``) and are
written one at a time, so an export of any size runs in the memory of a cursor's prefetch and
one Parquet row group.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import asyncpg
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from ingest.metrics.registry import MetricRegistry
from ingest.wire.events import EPOCH_NUMBERS
from workers.export.shapes import NotChat, Shape, as_example, as_messages, as_row, fields_of
from workers.export.writers import Format, open_writer
from workers.read_model.current_feedback import FeedbackFilter, current_feedback

_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime, config=EPOCH_NUMBERS)


@dataclass(frozen=True)
class ExportOptions:
    where: FeedbackFilter
    shape: Shape = "rows"
    fmt: Format = "jsonl"
    output: Path | None = None
    with_predictions: bool = False
    limit: int | None = None


def parse_time(flag: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return _TIME.validate_python(int(text) if text.isdigit() else text)
    except ValidationError:
        raise ValueError(
            f"{flag} {text!r}: not a time (RFC 3339 with a UTC offset, or epoch milliseconds)"
        ) from None


def options_from(args: argparse.Namespace, registry: MetricRegistry) -> ExportOptions:
    """The flags checked: every mistake is a ValueError naming its flag."""
    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    source_types = [s.partition(":")[0] for s in args.source if s.partition(":")[0]]
    source_ids = [s.partition(":")[2] for s in args.source if s.partition(":")[2]]
    where = FeedbackFilter(
        metrics=args.metric,
        applications=args.application,
        models=args.model,
        statuses=args.status,
        since=parse_time("--since", args.since),
        until=parse_time("--until", args.until),
        tags=tags,
        source_types=source_types,
        source_ids=source_ids,
        as_of=parse_time("--as-of", args.as_of),
    )
    shape = cast(Shape, args.shape)
    if shape != "rows":
        where = _training_filter(where, args.metric, registry)
    fmt = args.format or _format_of(args.output)
    if shape == "messages" and fmt != "jsonl":
        raise ValueError("--shape messages: chat data is JSONL (--format jsonl)")
    if args.limit is not None and args.limit < 0:
        raise ValueError("--limit: 0 or more")
    return ExportOptions(
        where, shape, fmt, args.output, args.with_prediction or shape != "rows", args.limit
    )


def _training_filter(
    where: FeedbackFilter, metrics: list[str], registry: MetricRegistry
) -> FeedbackFilter:
    metric = registry.metrics.get(metrics[0]) if len(metrics) == 1 else None
    if metric is None or metric.type not in ("boolean", "demonstration"):
        raise ValueError(
            "--shape examples/messages: give one --metric, boolean (the predictions rated "
            "positive) or demonstration (the corrected outputs)"
        )
    return FeedbackFilter(
        **{
            **where.__dict__,
            "statuses": ["joined"],
            "positive_only": metric.type == "boolean",
        }
    )


def _format_of(output: Path | None) -> Format:
    suffix = output.suffix.lower() if output else ""
    return {".csv": "csv", ".parquet": "parquet"}.get(suffix, "jsonl")  # type: ignore[return-value]


async def export(database_url: str, options: ExportOptions) -> int:
    shape = _shaper(options)
    conn = await asyncpg.connect(database_url)
    written = skipped = 0
    try:
        with ExitStack() as stack:
            out: BinaryIO = (
                stack.enter_context(options.output.open("wb"))
                if options.output
                else sys.stdout.buffer
            )
            writer = open_writer(
                options.fmt, out, fields_of(options.shape, options.with_predictions)
            )
            rows = current_feedback(
                conn,
                options.where,
                options.with_predictions,
                options.limit,
                one_per_prediction=options.shape != "rows",
            )
            async for row in rows:
                try:
                    record = shape(row)
                except NotChat:
                    skipped += 1
                    continue
                writer.write(record)
                written += 1
            writer.close()
    finally:
        await conn.close()
    where = f" to {options.output}" if options.output else ""
    note = f"; {skipped} skipped: not chat messages" if skipped else ""
    print(f"export: {written} records{where}{note}", file=sys.stderr)
    return 0


def _shaper(options: ExportOptions) -> Callable[[dict[str, Any]], dict[str, Any]]:
    if options.shape == "examples":
        return as_example
    if options.shape == "messages":
        return as_messages
    return lambda row: as_row(row, options.with_predictions)
