"""A window the sink refuses for a reason in its data is split until the rows at fault are found.

Decoding rejects what it can foresee (workers.stream.json_checks); this is the one mechanism for
what it cannot.  The window is halved, and each half written in its own transaction, until a
refused part holds one row: that row becomes a dead letter carrying the database's own message,
and everything else commits.  No single event can stop a partition, and a window with k bad
rows costs about k times log2(window) extra writes, paid only when it happens.

Halves keep every rule of the join: feedback whose prediction falls in the other half waits
pending and is resolved when that half is written, as it would across two windows.

A refused row has been decoded, and the worker keeps no Kafka position per row (that would cost
every event memory and time for a rare case).  Its dead letter is therefore the row as decoded,
as JSON, filed under its input topic and its event id: partition -1, and as offset the id's low
63 bits, so a replay files it under the same key, once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from ingest.topics import TopicNames
from workers.stream.decode import DeadLetter, FeedbackRow, PredictionRow, SelectorRow, as_time
from workers.stream.sink import SinkRefused, WindowOutcome
from workers.stream.window import WindowContents

ResolveAfter = Callable[[], Awaitable[object]] | None
WriteWindow = Callable[[WindowContents, ResolveAfter], Awaitable[WindowOutcome]]
T = TypeVar("T")
UNKNOWN_PARTITION = -1
_OFFSET_BITS = (1 << 63) - 1


async def write_isolating_refusals(
    write: WriteWindow,
    contents: WindowContents,
    resolve_after: ResolveAfter,
    topics: TopicNames,
    now: datetime,
) -> tuple[WindowOutcome, list[DeadLetter]]:
    """Write ``contents`` whole, or in parts around the rows the sink refuses; return what was
    written and the dead letters made of refused rows (they are written too)."""
    try:
        return await write(contents, resolve_after), []
    except SinkRefused as refusal:
        if _rows(contents) > 1:
            first, second = _halves(contents)
            done_first, refused_first = await write_isolating_refusals(
                write, first, resolve_after, topics, now
            )
            done_second, refused_second = await write_isolating_refusals(
                write, second, None, topics, now
            )
            return done_first.plus(done_second), refused_first + refused_second
        return await _write_refused_row(write, contents, refusal, resolve_after, topics, now)


async def _write_refused_row(
    write: WriteWindow,
    contents: WindowContents,
    refusal: SinkRefused,
    resolve_after: ResolveAfter,
    topics: TopicNames,
    now: datetime,
) -> tuple[WindowOutcome, list[DeadLetter]]:
    if contents.dead_letters:
        # A dead letter itself refused (its payload, say): keep the record of it without it.
        (dead,) = contents.dead_letters
        kept = dead._replace(
            payload=b"", reason=f"{dead.reason}; payload refused by the database: {refusal}"
        )
        outcome = await write(WindowContents([], [], [kept], {}, 1), resolve_after)
        return outcome, []
    row: PredictionRow | FeedbackRow | SelectorRow = (
        contents.predictions or contents.feedback or contents.selectors
    )[0]
    dead = refused_row(row, refusal, topics, now)
    outcome = await write(WindowContents([], [], [dead], {}, 1), resolve_after)
    return outcome, [dead]


def refused_row(
    row: PredictionRow | FeedbackRow | SelectorRow,
    refusal: SinkRefused,
    topics: TopicNames,
    now: datetime,
) -> DeadLetter:
    if isinstance(row, PredictionRow):
        topic, event_id = topics.predictions, row.prediction_id
    else:
        topic, event_id = topics.feedback, row.feedback_id
    return DeadLetter(
        topic,
        UNKNOWN_PARTITION,
        event_id.int & _OFFSET_BITS,
        as_time(row.ts),
        None,
        json.dumps(_as_json(row), separators=(",", ":")).encode(),
        refusal.column or "(row)",
        f"the database refused the row: {refusal.reason}",
        now,
    )


def _as_json(row: PredictionRow | FeedbackRow | SelectorRow) -> dict[str, object]:
    """The row as decoded, JSON text columns parsed back, times as RFC 3339."""
    out: dict[str, object] = {}
    for name, value in zip(row._fields, row, strict=True):
        if isinstance(value, UUID):
            out[name] = str(value)
        elif name in ("ts", "ingested_at", "target_id_time") and isinstance(value, int):
            out[name] = as_time(value).isoformat()
        else:
            out[name] = value
    return out


def _rows(contents: WindowContents) -> int:
    return sum(len(rows) for rows in _kinds(contents))


def _kinds(contents: WindowContents) -> tuple[list[Any], ...]:
    return contents.predictions, contents.feedback, contents.dead_letters, contents.selectors


def _halves(contents: WindowContents) -> tuple[WindowContents, WindowContents]:
    first, second = zip(*(_split(rows) for rows in _kinds(contents)), strict=True)
    if not any(first):  # at most one row of each kind: the first half takes a whole kind
        taken = next(i for i, rows in enumerate(second) if rows)
        first = tuple(rows if i == taken else [] for i, rows in enumerate(second))
        second = tuple([] if i == taken else rows for i, rows in enumerate(second))
    return _part(*first), _part(*second)


def _split(rows: list[T]) -> tuple[list[T], list[T]]:
    middle = len(rows) // 2
    return rows[:middle], rows[middle:]


def _part(
    predictions: list[PredictionRow],
    feedback: list[FeedbackRow],
    dead: list[DeadLetter],
    selectors: list[SelectorRow],
) -> WindowContents:
    events = len(predictions) + len(feedback) + len(dead) + len(selectors)
    return WindowContents(predictions, feedback, dead, {}, events, selectors)
