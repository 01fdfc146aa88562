"""``feedbackflow report``: the read model over a range, drawn as one PNG."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from workers.read_model.queries import Selection
from workers.settings import Settings

Command = TypeVar("Command", bound=Callable[..., Any])

HELP = "draw the read model as a PNG: values per model, delay, coverage, agreement, backlog"
DEFAULT_DAYS = 30


def options(command: Command) -> Command:
    decorators = [
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path, dir_okay=False),
            default=Path("feedbackflow-report.png"),
            show_default=True,
            help="the PNG to write",
        ),
        click.option(
            "--since",
            type=click.DateTime(),
            help=f"start of the range, UTC (default: {DEFAULT_DAYS} days before --until)",
        ),
        click.option("--until", type=click.DateTime(), help="end of the range, UTC (default: now)"),
        click.option("--application", "applications", multiple=True, help="only these (repeat)"),
        click.option("--model", "models", multiple=True, help="only these (repeat)"),
        click.option("--metric", "metrics", multiple=True, help="only these (repeat)"),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=moment.tzinfo or UTC)


def selection_of(given: dict[str, Any], now: datetime) -> Selection:
    until = _utc(given.get("until")) or now
    since = _utc(given.get("since")) or until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise click.BadParameter(
            f"{since:%Y-%m-%d %H:%M} is not before {until:%Y-%m-%d %H:%M}", param_hint="--since"
        )
    return Selection(
        since,
        until,
        applications=list(given.get("applications") or ()) or None,
        models=list(given.get("models") or ()) or None,
        metrics=list(given.get("metrics") or ()) or None,
    )


async def write_report(database_url: str, selection: Selection, output: Path) -> bool:
    """Draw the report for ``selection`` into ``output``; False when the range holds nothing."""
    # Here, not above: matplotlib loads when a report is drawn, not for every command.
    from workers.report.data import read_report
    from workers.report.figure import draw, save_png

    conn = await asyncpg.connect(database_url)
    try:
        data = await read_report(conn, selection)
    finally:
        await conn.close()
    title = (
        f"feedbackflow: {selection.time_from:%Y-%m-%d %H:%M} to "
        f"{selection.time_to:%Y-%m-%d %H:%M} UTC"
    )
    save_png(draw(data, title), output)
    return not data.empty


def run(settings: Settings, given: dict[str, Any]) -> int:
    selection = selection_of(given, datetime.now(UTC))
    output: Path = given["output"]
    drawn = asyncio.run(write_report(settings.database_url, selection, output))
    if not drawn:
        click.echo(f"report: nothing in this range; {output} drawn empty", err=True)
    click.echo(f"report: {output}")
    return 0
