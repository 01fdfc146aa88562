"""What the window writer needs of a sink: write one window in one transaction, idempotently.

``workers.postgres.sink.PostgresSink`` is the real one; tests may pass any object with these
methods.  The writer commits Kafka offsets only after ``write`` returns, so a sink must make a
replayed window change nothing (ids are idempotency keys).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from workers.stream.window import WindowContents


@dataclass(frozen=True)
class WindowOutcome:
    """What one window changed in the sink (replays count zero)."""

    predictions_inserted: int
    feedback_inserted: int
    dead_letters_inserted: int
    resolved: Counter[str]
    expired_unmatched: int
    feedback_queued: int = 0  # stored pending: its prediction was not written yet

    def plus(self, other: WindowOutcome) -> WindowOutcome:
        """Both outcomes as one: a window written in parts (workers.stream.refusals)."""
        return WindowOutcome(
            self.predictions_inserted + other.predictions_inserted,
            self.feedback_inserted + other.feedback_inserted,
            self.dead_letters_inserted + other.dead_letters_inserted,
            self.resolved + other.resolved,
            self.expired_unmatched + other.expired_unmatched,
            self.feedback_queued + other.feedback_queued,
        )


class SinkUnavailable(Exception):
    """The write failed for a reason that a retry may not have (the connection went away, the
    server asked for a retry); nothing of the window was committed.  ``__cause__`` is the
    sink's own error."""


class SinkRefused(Exception):
    """The window cannot be written for a reason in its data (a value the database will not
    store), not in the connection: a retry would fail the same way.  Nothing of the window was
    committed.  ``column`` names the column the database blamed, when it said."""

    def __init__(self, reason: str, column: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.column = column


class Sink(Protocol):
    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        """Write the window in one transaction.  ``resolve_after``, if given, is awaited before
        the window resolves any feedback (the commit of the window before: see
        ``workers.stream.window_writer``).  Raises ``SinkUnavailable`` when a retry may help,
        ``SinkRefused`` when the data is at fault."""
        ...

    async def close(self) -> None: ...
