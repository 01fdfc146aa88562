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


class SinkUnavailable(Exception):
    """The write failed for a reason that a retry may not have (the connection went away, the
    server asked for a retry); nothing of the window was committed.  ``__cause__`` is the
    sink's own error."""


class Sink(Protocol):
    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        """Write the window in one transaction.  ``resolve_after``, if given, is awaited before
        the window resolves any feedback (the commit of the window before: see
        ``workers.stream.window_writer``).  Raises ``SinkUnavailable`` when a retry may help."""
        ...

    async def close(self) -> None: ...
