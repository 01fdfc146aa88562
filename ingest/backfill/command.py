"""The ``backfill`` subcommand's flags, and the call from them to ``ingest.backfill.run``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from aiokafka.errors import KafkaError

from ingest.metrics.registry import MetricRegistry
from workers.settings import Settings

Command = TypeVar("Command", bound=Callable[..., Any])

# Flags only here: pyarrow and rich load when the command runs, not for every command.
FORMATS = ("jsonl", "csv", "parquet")
HELP = "load JSONL/CSV/Parquet history through Kafka or (--direct) into Postgres"


def options(command: Command) -> Command:
    """The command's arguments and flags (Click), on top of the common ones."""
    for decorator in reversed(
        [
            click.argument(
                "files", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="FILE..."
            ),
            click.option(
                "--kind",
                type=click.Choice(["auto", "prediction", "feedback"]),
                default="auto",
                show_default=True,
                help="what the rows are (auto: a 'kind' column, else a row with a metric is "
                "feedback)",
            ),
            click.option(
                "--format", type=click.Choice(FORMATS), help="default: from the file name"
            ),
            click.option(
                "--map",
                multiple=True,
                metavar="FIELD=COLUMN",
                help="wire field from a column; dotted fields go inside objects "
                "(inputs.question=q)",
            ),
            click.option(
                "--set", multiple=True, metavar="FIELD=VALUE", help="same value every row"
            ),
            click.option("--ignore", multiple=True, metavar="COLUMN", help="a column to leave out"),
            click.option(
                "--mapping",
                type=click.Path(path_type=Path),
                help="TOML file with a [backfill] table: columns, set, ignore",
            ),
            click.option(
                "--dry-run", is_flag=True, help="check every row and report; write nothing"
            ),
            click.option(
                "--direct", is_flag=True, help="write to Postgres through the worker's sink"
            ),
            click.option("--rate", type=float, help="rows per second at most"),
            click.option("--batch-rows", type=int, help="rows written at once (default 5000)"),
            click.option("--no-progress", is_flag=True, help="no progress bar"),
        ]
    ):
        command = decorator(command)
    return command


def run(settings: Settings, registry: MetricRegistry, args: argparse.Namespace) -> int:
    from ingest.backfill.mapping import ColumnMapping
    from ingest.backfill.run import BackfillOptions, backfill

    if args.batch_rows is not None and args.batch_rows < 1:
        raise ValueError("--batch-rows: at least 1")
    if args.rate is not None and args.rate <= 0:
        raise ValueError("--rate: rows per second, more than 0")
    options = BackfillOptions(
        files=args.files,
        mapping=ColumnMapping.build(args.map, args.set, args.ignore, args.mapping),
        kind=args.kind,
        fmt=args.format,
        dry_run=args.dry_run,
        direct=args.direct,
        rate=args.rate,
        batch_rows=args.batch_rows or BackfillOptions.batch_rows,
        progress=not args.no_progress,
    )
    for path in options.files:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    try:
        return asyncio.run(backfill(settings, registry, options))
    except KeyboardInterrupt:
        print(
            "feedbackflow: backfill interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as exc:
        # What is durable is in the checkpoint: the same command resumes after it.
        print(
            f"feedbackflow: backfill stopped: {exc!r}; run the same command again to resume",
            file=sys.stderr,
        )
        return 3
