"""The one contract every step of the hot path keeps, after Sentry's arroyo ``ProcessingStrategy``.

A step takes what the step before it hands on (``submit``), does what has become due
(``poll``), and hands its own output to the next step.  The chain is
hold back → decode → window → write → dead letters → commit offsets, and the consumer loop
(``workers.stream.consumer_loop``) only fetches, submits to the first step and polls it.

- ``submit`` never waits.  A step that cannot take more now raises ``MessageRejected`` and keeps
  nothing of the message: the step before it keeps it and offers it again after a ``poll``
  (back-pressure, instead of a queue that grows or a wait hidden in the loop).
- ``demand`` says how many more records the chain wants: the loop fetches no more than that,
  and nothing while it is zero.
- ``poll`` does what is due (a window whose time is up, a write that finished) and passes the
  poll on.  With ``wait`` it may wait up to that long for something to become due, which is how
  the loop waits while the chain has no demand.  A failure of earlier work surfaces here.
- ``join`` finishes everything submitted so far, down to the committed offsets, by a monotonic
  ``deadline`` (None: however long it takes), else raises ``FlushTimeout`` (quixstreams'
  revoke-flush timeout).  A step may not be submitted to again after a failed ``join``.
- ``terminate`` abandons whatever is not committed, at once and without awaiting: the records
  behind it were never committed, so whoever owns their partitions next reads them again, and
  the idempotent sink makes that replay change nothing.  The chain is then built anew.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

T_contra = TypeVar("T_contra", contravariant=True)


class MessageRejected(Exception):
    """The step cannot take this now; offer it again after the next poll."""


class FlushTimeout(Exception):
    """``join`` reached its deadline with work not committed."""


class Step(Protocol[T_contra]):
    def submit(self, message: T_contra) -> None: ...

    def demand(self) -> int: ...

    async def poll(self, wait: float = 0.0) -> None: ...

    async def join(self, deadline: float | None) -> None: ...

    def terminate(self) -> None: ...


def seconds_left(deadline: float | None, now: float) -> float | None:
    """What is left of a monotonic ``deadline`` (None: no deadline); FlushTimeout once past it."""
    if deadline is None:
        return None
    left = deadline - now
    if left <= 0:
        raise FlushTimeout("the flush deadline passed")
    return left


@asynccontextmanager
async def by_deadline(deadline: float | None) -> AsyncIterator[None]:
    """Run the block until a monotonic ``deadline`` (None: no limit); FlushTimeout past it."""
    try:
        async with asyncio.timeout(seconds_left(deadline, time.monotonic())):
            yield
    except TimeoutError:
        raise FlushTimeout("the flush deadline passed") from None
