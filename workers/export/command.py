"""The ``export`` subcommand's flags, and the call from them to ``workers.export.run``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ingest.metrics.registry import MetricRegistry
from workers.settings import Settings

Command = TypeVar("Command", bound=Callable[..., Any])

# Flags only here: pyarrow loads when the command runs, not for every command.
FORMATS = ("jsonl", "csv", "parquet")
SHAPES = ("rows", "examples", "messages")
HELP = "joined feedback out as JSONL, CSV or Parquet (training data: --shape)"


def options(command: Command) -> Command:
    """The command's flags (Click), on top of the common ones."""
    decorators = [
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path),
            help="file (default: standard output)",
        ),
        click.option(
            "--format", type=click.Choice(FORMATS), help="default: the output's suffix, or jsonl"
        ),
        click.option(
            "--shape",
            type=click.Choice(SHAPES),
            default="rows",
            show_default=True,
            help="rows: feedback; examples: rated-positive or demonstrated predictions (one "
            "boolean or demonstration --metric); messages: the examples as chat JSONL",
        ),
        click.option(
            "--with-prediction", is_flag=True, help="rows: add the prediction's inputs/outputs"
        ),
    ]
    for flag, what in (
        ("--metric", "metric"),
        ("--application", "application"),
        ("--model", "model"),
        ("--status", "joined, pending or expired"),
    ):
        decorators.append(click.option(flag, multiple=True, help=f"{what} (repeatable)"))
    decorators += [
        click.option(
            "--source",
            multiple=True,
            metavar="TYPE[:ID]",
            help="human, llm_judge, code or end_user, optionally with the source's id",
        ),
        click.option(
            "--tag", multiple=True, metavar="KEY=VALUE", help="feedback or prediction tag"
        ),
        click.option("--since", help="feedback time from (RFC 3339 or epoch ms)"),
        click.option("--until", help="feedback time before"),
        click.option(
            "--as-of", help="the values as they stood at this time (later revisions ignored)"
        ),
        click.option("--limit", type=int, help="at most this many records"),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def run(settings: Settings, registry: MetricRegistry, args: argparse.Namespace) -> int:
    from workers.export.run import export, options_from

    options = options_from(args, registry)
    return asyncio.run(export(settings.database_url, options))
