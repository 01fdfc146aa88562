"""The ``export`` subcommand's flags, and the call from them to ``workers.export.run``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ingest.metrics.registry import MetricRegistry
from workers.settings import Settings

# Flags only here: pyarrow loads when the command runs, not for every command.
FORMATS = ("jsonl", "csv", "parquet")
SHAPES = ("rows", "examples", "messages")
HELP = "joined feedback out as JSONL, CSV or Parquet (training data: --shape)"


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser("export", parents=[common], help=HELP, description=HELP)
    parser.add_argument("-o", "--output", type=Path, help="file (default: standard output)")
    parser.add_argument("--format", choices=FORMATS, help="default: the output's suffix, or jsonl")
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="rows",
        help="rows: feedback; examples: rated-positive or demonstrated predictions (one "
        "boolean or demonstration --metric); messages: the examples as chat JSONL",
    )
    parser.add_argument(
        "--with-prediction", action="store_true", help="rows: add the prediction's inputs/outputs"
    )
    for flag, what in (
        ("--metric", "metric"),
        ("--application", "application"),
        ("--model", "model"),
        ("--status", "joined, pending or expired"),
    ):
        parser.add_argument(flag, action="append", default=[], help=f"{what} (repeatable)")
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="TYPE[:ID]",
        help="human, llm_judge, code or end_user, optionally with the source's id",
    )
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="feedback or prediction tag"
    )
    parser.add_argument("--since", help="feedback time from (RFC 3339 or epoch ms)")
    parser.add_argument("--until", help="feedback time before")
    parser.add_argument(
        "--as-of", help="the values as they stood at this time (later revisions ignored)"
    )
    parser.add_argument("--limit", type=int, help="at most this many records")


def run(settings: Settings, registry: MetricRegistry, args: argparse.Namespace) -> int:
    from workers.export.run import export, options_from

    options = options_from(args, registry)
    return asyncio.run(export(settings.database_url, options))
