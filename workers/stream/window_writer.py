"""WindowWriter: closed windows into the sink, a few at once, handed on in window order.

Each window is written in its own transaction, on its own connection, while the loop fills the
next: that lets this process decode while Postgres, another process, writes on the other cores
(docs/performance.md measures one against two in flight).  More than ``max_in_flight`` at once
is ``MessageRejected``: the window stays closed, the loop stops fetching, and memory stays
bounded by the window cap (the filling window plus those in flight).

Writes may finish in any order; they are handed on (and so their offsets committed) in window
order, so a committed offset always means every earlier record is in Postgres.  Feedback is
resolved in window order too: a window's resolution waits for the window before it to commit.
Feedback handed on just after its prediction lands in the next window, and whichever of the two
resolved first decided its path; the later one first, and it went through the pending queue (in
a test, 814 of 6,000).  Waiting costs nothing: the two transactions took the resolution lock one
after the other anyway, and COPY and the prediction inserts still run side by side.

A write the sink calls retryable (``SinkUnavailable``) is retried with back-off, for as long as
it takes unless a limit is set, and /health says why meanwhile.  A window the sink refuses for a
reason in its data is split until the rows at fault are found (``workers.stream.refusals``).
Any other failure surfaces at the next ``poll`` and abandons the later windows: the replay from
the last committed offsets writes them again, idempotently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ingest.topics import TopicNames
from workers.clock import Clock
from workers.health import PipelineHealth
from workers.stream.decode import DeadLetter
from workers.stream.messages import WrittenWindow
from workers.stream.refusals import write_isolating_refusals
from workers.stream.sink import Sink, SinkUnavailable, WindowOutcome
from workers.stream.step import MessageRejected, Step, seconds_left
from workers.stream.window import WindowContents
from workers.telemetry import WorkerTelemetry

log = logging.getLogger("feedbackflow.worker")

# Dead letters logged one line each per window, at most: a flood of bad events is counted and
# in the table whole; the log names the first few and how many more.
DEAD_LETTERS_LOGGED_PER_WINDOW = 20


def log_written_window(
    events: int, outcome: WindowOutcome, dead_letters: Sequence[DeadLetter], seconds: float
) -> None:
    """One info line per written window, one warning per dead letter: a new user watching the
    log sees events land (or why not) without querying the tables."""
    if events == 0:
        return  # an idle worker's empty windows say nothing
    resolved = ", ".join(f"{n} {status}" for status, n in sorted(outcome.resolved.items()))
    log.info(
        "window written: %d events, %d predictions and %d feedback new (%s), "
        "%d dead letters, in %.2fs",
        events,
        outcome.predictions_inserted,
        outcome.feedback_inserted,
        resolved or "none resolved",
        len(dead_letters),
        seconds,
    )
    for dead in dead_letters[:DEAD_LETTERS_LOGGED_PER_WINDOW]:
        log.warning(
            "dead letter %s/%d/%d: %s: %s",
            dead.topic,
            dead.kafka_partition,
            dead.kafka_offset,
            dead.error_field,
            dead.reason,
        )
    more = len(dead_letters) - DEAD_LETTERS_LOGGED_PER_WINDOW
    if more > 0:
        log.warning("... and %d more dead letters in this window (feedbackflow.dead_letters)", more)


@dataclass(frozen=True)
class Retry:
    """How a window write is retried when the sink is unavailable: ``attempts`` 0 is for as long
    as it takes (the window waits, bounded; the partitions' lag grows; /health says why)."""

    attempts: int = 0
    first_delay: float = 0.2
    max_delay: float = 10.0


class WindowWriter:
    def __init__(
        self,
        sink: Sink,
        next_step: Step[WrittenWindow],
        clock: Clock,
        telemetry: WorkerTelemetry,
        max_in_flight: int,
        retry: Retry,
        topics: TopicNames,
        health: PipelineHealth | None = None,
        recheck: Callable[[WindowContents], Awaitable[WindowContents]] | None = None,
    ) -> None:
        if not 1 <= max_in_flight <= 2:
            # WindowBuffer drops ids of the one window before: the only one that can be
            # uncommitted when the next is written, with two in flight at most.
            raise ValueError(f"windows in flight must be 1 or 2, not {max_in_flight}")
        self.sink = sink
        self.next_step = next_step
        self.clock = clock
        self.telemetry = telemetry
        self.max_in_flight = max_in_flight
        self.retry = retry
        self.topics = topics
        self.health = health or PipelineHealth()
        # Dead letters that may decode after all (workers.stream.unknown_metrics).
        self.recheck = recheck
        self._in_flight: deque[asyncio.Task[WrittenWindow]] = deque()
        # Set once the newest window submitted so far has committed (or failed).
        self._last_written: asyncio.Event | None = None

    def submit(self, message: WindowContents) -> None:
        if len(self._in_flight) >= self.max_in_flight:
            raise MessageRejected
        before, written = self._last_written, asyncio.Event()
        self._last_written = written
        self._in_flight.append(
            asyncio.create_task(self._write(message, before, written), name="window-write")
        )

    def demand(self) -> int:
        return self.next_step.demand()

    async def poll(self, wait: float = 0.0) -> None:
        if wait and self._in_flight and not self._in_flight[0].done():
            await asyncio.wait([self._in_flight[0]], timeout=wait)
        while self._in_flight and self._in_flight[0].done():
            task = self._in_flight.popleft()
            try:
                written = task.result()
            except BaseException:
                self.terminate()
                raise
            self.next_step.submit(written)
        await self.next_step.poll()

    async def join(self, deadline: float | None) -> None:
        while self._in_flight:
            left = seconds_left(deadline, time.monotonic())
            await asyncio.wait([self._in_flight[0]], timeout=left)
            await self.poll()
        await self.next_step.join(deadline)

    def terminate(self) -> None:
        for task in self._in_flight:
            task.cancel()  # the sink closes a connection cancelled mid-transaction
        self._in_flight.clear()
        self._last_written = None
        self.next_step.terminate()

    async def _write(
        self, contents: WindowContents, before: asyncio.Event | None, written: asyncio.Event
    ) -> WrittenWindow:
        started = time.perf_counter()
        try:
            if self.recheck is not None and contents.dead_letters:
                contents = await self.recheck(contents)
            outcome, refused = await self._write_with_retries(contents, before)
        finally:
            written.set()  # failed or not: a later window never waits on it for ever
        seconds = time.perf_counter() - started
        self.telemetry.window_write_seconds.observe(seconds)
        dead_letters = contents.dead_letters + refused if refused else contents.dead_letters
        log_written_window(contents.events, outcome, dead_letters, seconds)
        return WrittenWindow(contents.next_offsets, contents.events, dead_letters, outcome, seconds)

    async def _write_with_retries(
        self, contents: WindowContents, before: asyncio.Event | None
    ) -> tuple[WindowOutcome, list[DeadLetter]]:
        resolve_after = None if before is None else before.wait
        retry, delay, attempt = self.retry, self.retry.first_delay, 0
        while True:
            attempt += 1
            try:
                written = await write_isolating_refusals(
                    self._write_part, contents, resolve_after, self.topics, self.clock.now()
                )
            except SinkUnavailable as exc:
                self.telemetry.windows.labels("retried").inc()
                self.health.failing("write", repr(exc.__cause__ or exc))
                if attempt == retry.attempts:
                    self.telemetry.windows.labels("failed").inc()
                    raise
                log.warning(
                    "window write failed (attempt %d): %r; retrying in %.1fs",
                    attempt,
                    exc.__cause__ or exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry.max_delay)
                continue
            self.health.working("write")
            if written[1]:
                self.telemetry.windows.labels("split").inc()
                log.warning(
                    "window refused by the database: %d row(s) isolated as dead letters, the "
                    "rest written (%s)",
                    len(written[1]),
                    written[1][0].reason,
                )
            return written

    async def _write_part(
        self, contents: WindowContents, resolve_after: Callable[[], Awaitable[object]] | None
    ) -> WindowOutcome:
        return await self.sink.write(contents, self.clock.now(), resolve_after)
