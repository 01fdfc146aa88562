"""The ``backfill`` subcommand's flags, and the call from them to ``ingest.backfill.run``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg
from aiokafka.errors import KafkaError

from ingest.metrics.registry import MetricRegistry
from workers.settings import Settings

# Flags only here: pyarrow and rich load when the command runs, not for every command.
FORMATS = ("jsonl", "csv", "parquet")
HELP = "load JSONL/CSV/Parquet history through Kafka or (--direct) into Postgres"


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser("backfill", parents=[common], help=HELP, description=HELP)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--kind",
        choices=("auto", "prediction", "feedback"),
        default="auto",
        help="what the rows are (auto: a 'kind' column, else a row with a metric is feedback)",
    )
    parser.add_argument("--format", choices=FORMATS, help="default: from the file name")
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="wire field from a column; dotted fields go inside objects (inputs.question=q)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="same value every row"
    )
    parser.add_argument(
        "--ignore", action="append", default=[], metavar="COLUMN", help="a column to leave out"
    )
    parser.add_argument(
        "--mapping", type=Path, help="TOML file with a [backfill] table: columns, set, ignore"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check every row and report; write nothing"
    )
    parser.add_argument(
        "--direct", action="store_true", help="write to Postgres through the worker's sink"
    )
    parser.add_argument("--rate", type=float, help="rows per second at most")
    parser.add_argument("--batch-rows", type=int, help="rows written at once (default 5000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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
