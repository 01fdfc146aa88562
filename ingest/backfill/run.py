"""``feedbackflow backfill FILE...``: each file read in batches, checked by the worker's decoder,
written to its destination, its bad rows to a reject file beside it, its checkpoint moved on.

One batch at a time from file to destination, so memory is a batch whatever the file's size;
the checkpoint moves only once a batch is durable (``ingest.backfill.checkpoint``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ingest.backfill.checking import CheckedBatch, RowChecker
from ingest.backfill.checkpoint import Checkpoint
from ingest.backfill.destinations import Destination, DirectDestination, KafkaDestination
from ingest.backfill.mapping import ColumnMapping, KindChoice
from ingest.backfill.report import Report
from ingest.backfill.sources import Format, SourceRow, format_of, read_rows, row_count
from ingest.metrics.registry import MetricRegistry
from ingest.topics import TopicNames
from workers.settings import Settings


@dataclass(frozen=True)
class BackfillOptions:
    files: list[Path]
    mapping: ColumnMapping
    kind: KindChoice = "auto"
    fmt: Format | None = None
    dry_run: bool = False
    direct: bool = False
    rate: float | None = None  # rows per second at most
    batch_rows: int = 5_000  # rows checked and written at once: memory is a few batches
    progress: bool = True


def rejects_path(source: Path) -> Path:
    return source.with_name(source.name + ".rejects.jsonl")


async def backfill(settings: Settings, registry: MetricRegistry, options: BackfillOptions) -> int:
    """Every file in turn; 0 when every row was good, 1 when some were bad."""
    topics = TopicNames(settings.topic_prefix)
    checker = RowChecker(
        options.mapping,
        options.kind,
        registry,
        topics,
        settings.pipeline.retention,
        settings.pipeline.selectable_tags,
        keep_bytes=not (options.dry_run or options.direct),
        keep_rows=options.direct and not options.dry_run,
    )
    destination: Destination | None = None
    if not options.dry_run:
        opener = DirectDestination.open if options.direct else KafkaDestination.open
        destination = await opener(settings)
    console = Console(stderr=True)
    any_bad = False
    try:
        for path in options.files:
            report = await _one_file(path, checker, destination, options, console)
            action = "checked" if options.dry_run else "written" if options.direct else "published"
            print(report.render(str(path), action), flush=True)
            if report.bad_rows:
                print(f"  rejected rows: {rejects_path(path)}", flush=True)
            any_bad = any_bad or report.bad_rows > 0
    finally:
        if destination is not None:
            await destination.close()
    return 1 if any_bad else 0


async def _one_file(
    path: Path,
    checker: RowChecker,
    destination: Destination | None,
    options: BackfillOptions,
    console: Console,
) -> Report:
    fmt = format_of(path, options.fmt)
    checkpoint = Checkpoint.beside(path) if destination is not None else None
    report = checkpoint.report if checkpoint and checkpoint.report else Report()
    done = checkpoint.rows_done if checkpoint else 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not (options.progress and console.is_terminal),
    )
    rejects = _rejects_file(path, checkpoint.rejects_bytes if checkpoint else 0)
    with rejects, progress:
        task = progress.add_task(path.name, total=row_count(path, fmt), completed=done, rate=0.0)
        run = _FileRun(checker, checkpoint, report, rejects, progress, task, _Pace(options.rate))
        run.done = done
        chunks = _batches(_skip(read_rows(path, fmt), done), _batch_size(options))
        await run.through(chunks, destination)
    if checkpoint is not None:
        checkpoint.remove()
    if report.bad_rows == 0:
        rejects_path(path).unlink(missing_ok=True)
    return report


@dataclass
class _FileRun:
    """One file's batches: each read and checked (in a thread) while the one before is being
    written, so the broker's or Postgres's work overlaps this process's; a batch is counted,
    its rejects written and the checkpoint moved only once its write is durable."""

    checker: RowChecker
    checkpoint: Checkpoint | None
    report: Report
    rejects: IO[str]
    progress: Progress
    task: TaskID
    pace: _Pace
    done: int = 0
    rows_now: int = 0
    started: float = field(default_factory=time.monotonic)

    async def through(
        self, chunks: Iterator[list[SourceRow]], destination: Destination | None
    ) -> None:
        def next_checked() -> tuple[int, CheckedBatch] | None:
            chunk = next(chunks, None)
            if chunk is None:
                return None
            return len(chunk), self.checker.check(chunk, datetime.now(UTC))

        in_flight: tuple[int, CheckedBatch, asyncio.Task[None] | None] | None = None
        try:
            while (checked := await asyncio.to_thread(next_checked)) is not None:
                if in_flight is not None:
                    await self._durable(*in_flight)
                rows, batch = checked
                write = asyncio.create_task(destination.write(batch)) if destination else None
                in_flight = (rows, batch, write)
            if in_flight is not None:
                await self._durable(*in_flight)
                in_flight = None
        finally:
            if in_flight is not None and in_flight[2] is not None:
                in_flight[2].cancel()

    async def _durable(
        self, rows: int, batch: CheckedBatch, write: asyncio.Task[None] | None
    ) -> None:
        if write is not None:
            await write
        self.report.add(batch, self.checker.topics.predictions)
        _write_rejects(self.rejects, batch)
        self.done += rows
        self.rows_now += rows
        if self.checkpoint is not None:
            self.checkpoint.report = self.report
            self.checkpoint.save(self.done, self.rejects.tell())
        rate = self.rows_now / max(time.monotonic() - self.started, 1e-9)
        self.progress.update(self.task, advance=rows, rate=rate)
        await self.pace.wait(self.rows_now, self.started)


def _batch_size(options: BackfillOptions) -> int:
    if options.rate is not None:  # a second's rows at most, so the pace stays even
        return max(1, min(options.batch_rows, int(options.rate)))
    return options.batch_rows


def _skip(rows: Iterator[SourceRow], done: int) -> Iterator[SourceRow]:
    """The rows after the first ``done`` (those a checkpoint says are durable)."""
    return islice(rows, done, None)


def _batches(rows: Iterator[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _rejects_file(source: Path, keep_bytes: int) -> IO[str]:
    """The reject file beside ``source``: cut back to the checkpoint's length, then appended."""
    path = rejects_path(source)
    out = path.open("a+", encoding="utf-8")
    out.truncate(keep_bytes)
    out.seek(keep_bytes)
    return out


def _write_rejects(out: IO[str], batch: CheckedBatch) -> None:
    for reject in batch.rejects:
        entry = {"line": reject.line, "field": reject.field, "reason": reject.reason}
        entry["row"] = reject.row
        out.write(json.dumps(entry, default=str, ensure_ascii=False) + "\n")
    out.flush()


class _Pace:
    """``--rate``: sleeps so that rows sent since the start stay under the rate."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate

    async def wait(self, rows: int, started: float) -> None:
        if self.rate is None:
            return
        ahead = rows / self.rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
