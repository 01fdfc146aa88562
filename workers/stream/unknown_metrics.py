"""Feedback naming a metric this worker does not know yet, decoded again before its window is
written.

Metrics may be defined at run time (``workers.postgres.metric_definitions``): a gateway stores
the definition, then publishes the first feedback for it, and the worker re-reads definitions
every few seconds.  Feedback decoded between the two would be a dead letter for a metric that
exists.  So before a window is written, its dead letters for an unknown metric (rare: none in
steady traffic, so this costs nothing per event) make the worker re-read the definitions once
and decode those records again; what now decodes is written with the window, the rest stays a
dead letter with its reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from workers.stream.decode import DeadLetter, Decoder
from workers.stream.window import WindowContents

UNKNOWN_METRIC = "unknown metric"


def names_unknown_metric(dead: DeadLetter) -> bool:
    return dead.error_field == "metric" and dead.reason.startswith(UNKNOWN_METRIC)


class RecheckUnknownMetrics:
    def __init__(self, decoder: Decoder, refresh: Callable[[], Awaitable[object]]) -> None:
        self.decoder = decoder
        self.refresh = refresh

    async def __call__(self, contents: WindowContents) -> WindowContents:
        unknown = [dead for dead in contents.dead_letters if names_unknown_metric(dead)]
        if not unknown:
            return contents
        await self.refresh()
        kept = [dead for dead in contents.dead_letters if not names_unknown_metric(dead)]
        feedback, selectors = list(contents.feedback), list(contents.selectors)
        seen = {row.feedback_id.int for row in feedback}
        seen.update(row.feedback_id.int for row in selectors)
        for dead in unknown:
            # Decoded as at its first decode: the same time bounds apply.
            again = self.decoder.decode([dead.as_record()], dead.received_at)
            kept.extend(again.dead_letters)
            feedback.extend(row for row in again.feedback if _first(seen, row.feedback_id.int))
            selectors.extend(row for row in again.selectors if _first(seen, row.feedback_id.int))
        return replace(contents, feedback=feedback, dead_letters=kept, selectors=selectors)


def _first(seen: set[int], key: int) -> bool:
    """Whether ``key`` is new to ``seen`` (and now in it)."""
    if key in seen:
        return False
    seen.add(key)
    return True
