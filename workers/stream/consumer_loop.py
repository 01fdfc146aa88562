"""The worker's hot path: fetch a batch → decode → buffer a window → write to Postgres → commit.

Offsets are committed here, explicitly, and only after the window's transaction has committed
(arroyo's ``CommitOffsets`` as the last step; quixstreams' "sinks flush, then offsets").  Nothing
is acknowledged implicitly: a crash at any point replays from the last committed offsets, and the
idempotent sink turns the replay into a no-op.

Per event there is one ``model_validate_json`` and a few dict operations; the awaits (fetch,
transaction, commit) are per batch and per window.  The window's size cap bounds memory: when it
is full and the writes in flight are at their limit, the loop waits before it fetches again,
which is the back-pressure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from workers.clock import Clock
from workers.postgres.sink import PostgresSink, WindowOutcome
from workers.stream.catch_up import CatchUp
from workers.stream.decode import DecodedBatch, Decoder
from workers.stream.hold_back import CaughtUp, FeedbackHoldBack
from workers.stream.window import WindowBuffer, WindowContents
from workers.telemetry import WorkerTelemetry

log = logging.getLogger("feedbackflow.worker")

# Retried by class, never by message text: the connection went away, or Postgres asks us to retry.
RETRYABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    # Another worker wrote the same event at the same moment (workers/postgres/join_sql.py): the
    # retry finds its committed copy and skips it.
    asyncpg.UniqueViolationError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
FETCH_MAX_RECORDS = 10_000
# Records decoded between two turns of the event loop (see WindowedJoin._decode).
DECODE_SLICE = 1_000
# Windows written at once, each on its own connection, while the loop fills the next.  Two let
# Postgres use both cores of a small machine: measured 1.2x the events/s of one at a time
# (docs/performance.md); three measured no better and hold one more window in memory.
WINDOWS_IN_FLIGHT = 2

# The longest feedback waits for its predictions partition to be read (FeedbackHoldBack) is a
# window, but never less than this: the wait's clock also runs while the loop is held up by
# writes in flight, reading nothing, and with 1 s windows (tests, the bench) 10-15% of a
# backlog's feedback gave up waiting and went through the pending queue (measured).
MIN_HOLD_SECONDS = 30.0

DeadLetterPublisher = Callable[[WindowContents], Awaitable[None]]


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: WindowedJoin) -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Write what we hold before the partitions move, so the new owner starts after it.
        await self.pipeline.flush()
        self.pipeline.hold_back.forget(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        return None


class WindowedJoin:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Iterable[str],
        sink_connect: Callable[[], Awaitable[PostgresSink]],
        decoder: Decoder,
        window: WindowBuffer,
        clock: Clock,
        telemetry: WorkerTelemetry,
        publish_dead_letters: DeadLetterPublisher | None = None,
        max_write_attempts: int = 8,
        max_windows_in_flight: int = WINDOWS_IN_FLIGHT,
    ) -> None:
        self.consumer = consumer
        self.topics = tuple(topics)
        self.sink_connect = sink_connect
        self.decoder = decoder
        self.window = window
        self.clock = clock
        self.telemetry = telemetry
        self.publish_dead_letters = publish_dead_letters
        self.max_write_attempts = max_write_attempts
        if not 1 <= max_windows_in_flight <= 2:
            # WindowBuffer drops ids of the one window before: the only one that can be
            # uncommitted when the next is written, with two in flight at most.
            raise ValueError(f"max_windows_in_flight must be 1 or 2, not {max_windows_in_flight}")
        self.max_windows_in_flight = max_windows_in_flight
        self.hold_back: FeedbackHoldBack[Any] = FeedbackHoldBack(
            decoder.topics.predictions,
            decoder.topics.feedback,
            partition_of=TopicPartition,
            max_held=window.max_events,
            max_wait_seconds=max(window.length_seconds, MIN_HOLD_SECONDS),
            monotonic=time.monotonic,
        )
        # Connections not writing a window right now: one per window in flight, at most.
        self.idle_sinks: list[PostgresSink] = []
        self.last_progress = time.monotonic()
        self._lock = asyncio.Lock()
        self._in_flight: deque[asyncio.Task[WindowOutcome]] = deque()
        # Set once the newest window written so far has committed (or failed): _close_window.
        self._last_written: asyncio.Event | None = None
        self.catch_up = CatchUp(window.max_events)

    def subscribe(self) -> None:
        self.consumer.subscribe(list(self.topics), listener=_FlushOnRevoke(self))

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set; then write and commit what is buffered."""
        consumed = self.telemetry.events_consumed
        while not stopping.is_set():
            room = self.window.room()
            batches: dict[Any, list[Any]] = {}
            if room:
                timeout = self.window.seconds_left() if self.window.events else 0.5
                partitions, most = self._what_to_read(min(room, FETCH_MAX_RECORDS))
                batches = await self.consumer.getmany(
                    *partitions, timeout_ms=int(min(timeout, 0.5) * 1000) or 1, max_records=most
                )
            self.last_progress = time.monotonic()
            for tp, part in batches.items():
                consumed.labels(tp.topic).inc(len(part))
            if room and (batches or self.hold_back.held):
                batches = self.hold_back.release(batches, await self._read_to_the_end(batches))
            else:
                batches = {}
            if batches:
                records = [r for part in batches.values() for r in part]
                decoded = await self._decode(records)
                self.window.add(
                    decoded, {tp: part[-1].offset + 1 for tp, part in batches.items() if part}
                )
            if self.catch_up.close_now(await self._lag(), self.window.events) or self.window.due():
                await self._close_window()
            elif self._in_flight and self._in_flight[0].done():
                await self._wait_oldest()  # surface a failed write at once
        await self.flush()

    async def _decode(self, records: list[Any]) -> DecodedBatch:
        """Decode in slices, letting the window writes run between them.

        Each statement of a window's transaction waits for this loop to send the next one; a
        10k-record batch decodes for ~60 ms without a pause, so Postgres waited ~30 ms on
        average after each of a window's ~12 statements (window writes took 0.6-1.0 s, with
        slices 0.35-0.65 s: docs/performance.md).  A slice decodes in a few milliseconds."""
        now = self.clock.now()
        if len(records) <= DECODE_SLICE:
            return self.decoder.decode(records, now)
        decoded = DecodedBatch()
        for start in range(0, len(records), DECODE_SLICE):
            part = self.decoder.decode(records[start : start + DECODE_SLICE], now)
            decoded.predictions += part.predictions
            decoded.feedback += part.feedback
            decoded.dead_letters += part.dead_letters
            await asyncio.sleep(0)
        return decoded

    async def _lag(self) -> int | None:
        """Records on the assigned partitions not read yet, as of the last fetch responses;
        None while a partition's end is unknown."""
        # High watermarks first, with no await in between: a rebalance cannot unassign a
        # partition under them (aiokafka asserts on an unassigned one).
        highwaters = [(tp, self.consumer.highwater(tp)) for tp in self.consumer.assignment()]
        lag = 0
        for tp, highwater in highwaters:
            if highwater is None:
                return None
            try:
                lag += max(highwater - await self.consumer.position(tp), 0)
            except IllegalStateError:
                return None  # revoked meanwhile
        return lag

    def _what_to_read(self, most: int) -> tuple[list[TopicPartition], int]:
        """The partitions to fetch from (an empty list: all assigned) and how many records.

        While feedback is held, not the feedback partitions holding it: aiokafka drains one
        partition's fetched records before the next, and would keep handing over feedback while
        the predictions it waits for sit in the fetcher.  Never more feedback than the hold-back
        has room for, and only predictions once it is half full: past its bound it would have to
        let feedback go ahead of its prediction (with a 10k window cap, half the bench's feedback
        did, measured)."""
        hold_back = self.hold_back
        holding = hold_back.holding()
        if not holding:
            return [], most
        assigned = self.consumer.assignment()
        room = hold_back.max_held - hold_back.held
        if room <= hold_back.max_held // 2:
            predictions = self.decoder.topics.predictions
            return [tp for tp in assigned if tp.topic == predictions], most
        return [tp for tp in assigned if tp not in holding], min(most, room)

    async def _read_to_the_end(self, batches: dict[Any, list[Any]]) -> CaughtUp:
        """Which predictions partitions that feedback (held, or in ``batches``) may wait on have
        been read to their end, or are not this worker's (then there is nothing to wait for).
        Before the first fetch of a partition its end is unknown: wait for it."""
        waited_on = set(self.hold_back.predictions_partitions_waited_on())
        feedback_topic, predictions_topic = (
            self.decoder.topics.feedback,
            self.decoder.topics.predictions,
        )
        waited_on.update(
            TopicPartition(predictions_topic, tp.partition)
            for tp in batches
            if tp.topic == feedback_topic
        )
        done = set()
        for tp in waited_on:
            try:
                position = await self.consumer.position(tp)
            except IllegalStateError:
                done.add(tp)
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is not None and position >= highwater:
                done.add(tp)
        return done.__contains__

    async def _close_window(self) -> None:
        """Hand the window to a background write and start filling the next one.

        At most ``max_windows_in_flight`` windows are written at once, each in its own
        transaction on its own connection; closing another first waits for the oldest.  That
        bounds memory by the window cap (the filling window plus those in flight) and lets this
        process decode while Postgres, another process, writes on the other cores.  Writes may
        finish in any order, but offsets are committed in window order (see _write_and_commit).

        Feedback is resolved in window order too: a window takes the resolution lock only once
        the window before it has committed.  Feedback handed on just after its prediction lands
        in the next window, and whichever of the two took the lock first decided its path; the
        later window first, and the feedback went through the pending queue (in a test, 814 of
        6,000).  Waiting costs nothing: the two transactions took that lock one after the other
        anyway, and COPY and the prediction inserts still run side by side.
        """
        async with self._lock:
            while len(self._in_flight) >= self.max_windows_in_flight:
                await self._wait_oldest()
            contents = self.window.drain()
            if contents.next_offsets:
                previous = self._in_flight[-1] if self._in_flight else None
                before, written = self._last_written, asyncio.Event()
                self._last_written = written
                self._in_flight.append(
                    asyncio.create_task(
                        self._write_and_commit(contents, previous, before, written),
                        name="window-write",
                    )
                )

    async def _wait_oldest(self) -> None:
        task = self._in_flight.popleft()
        try:
            await task
        except BaseException:
            # A later window must not commit past this one: drop them all, the replay from the
            # last committed offsets writes them again (idempotently).
            for later in self._in_flight:
                later.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            self._in_flight.clear()
            raise

    async def _wait_in_flight(self) -> None:
        while self._in_flight:
            await self._wait_oldest()

    async def flush(self) -> None:
        """Write and commit everything read so far (shutdown, partition revocation)."""
        await self._close_window()
        await self._wait_in_flight()

    async def _write_and_commit(
        self,
        contents: WindowContents,
        previous: asyncio.Task[WindowOutcome] | None,
        previous_written: asyncio.Event | None,
        written: asyncio.Event,
    ) -> WindowOutcome:
        """Write the window, then commit its offsets once the window before it has committed
        theirs: a committed offset always means every earlier record is in Postgres."""
        started = time.perf_counter()
        try:
            outcome = await self._write(contents, previous_written)
        finally:
            written.set()  # failed or not: a later window never waits on it for ever
        if self.publish_dead_letters is not None and contents.dead_letters:
            await self.publish_dead_letters(contents)
        if previous is not None:
            await asyncio.wait([previous])
            if previous.cancelled() or previous.exception() is not None:
                raise RuntimeError("an earlier window failed; not committing past it")
        await self._commit(contents)
        self._observe(contents, outcome, time.perf_counter() - started)
        return outcome

    async def _write(
        self, contents: WindowContents, previous_written: asyncio.Event | None = None
    ) -> WindowOutcome:
        delay = 0.2
        resolve_after = None if previous_written is None else previous_written.wait
        sink = self.idle_sinks.pop() if self.idle_sinks else None
        for attempt in range(1, self.max_write_attempts + 1):
            try:
                if sink is None:
                    sink = await self.sink_connect()
                outcome = await sink.write(contents, self.clock.now(), resolve_after)
            except RETRYABLE as exc:
                self.telemetry.windows.labels("retried").inc()
                await self._drop_sink(sink)
                sink = None
                if attempt == self.max_write_attempts:
                    self.telemetry.windows.labels("failed").inc()
                    raise
                log.warning(
                    "window write failed (attempt %d): %r; retrying in %.1fs", attempt, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except BaseException:
                if sink is not None:  # mid-transaction, maybe cancelled: no await, just close
                    sink.conn.terminate()
                raise
            else:
                self.idle_sinks.append(sink)
                return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    async def _drop_sink(self, sink: PostgresSink | None) -> None:
        if sink is not None:
            try:
                await sink.conn.close(timeout=2)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                sink.conn.terminate()

    async def _commit(self, contents: WindowContents) -> None:
        try:
            await self.consumer.commit(contents.next_offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance): the rows are in Postgres and the new owner's replay
            # of this window inserts nothing new. Nothing is lost and nothing duplicated.
            log.warning("offset commit refused after a rebalance: %r", exc)
            self.telemetry.windows.labels("commit_refused").inc()
            return
        except KafkaError:
            self.telemetry.windows.labels("commit_failed").inc()
            raise
        self.telemetry.last_commit.set(time.time())

    def _observe(self, contents: WindowContents, outcome: WindowOutcome, seconds: float) -> None:
        t = self.telemetry
        t.windows.labels("written").inc()
        t.window_events.observe(contents.events)
        t.window_write_seconds.observe(seconds)
        t.predictions_written.inc(outcome.predictions_inserted)
        t.feedback_written.inc(outcome.feedback_inserted)
        t.feedback_queued.inc(outcome.feedback_queued)
        for status, count in outcome.resolved.items():
            reason = "prediction_past_retention" if status == "expired" else ""
            t.feedback_resolved.labels(status, reason).inc(count)
        t.feedback_resolved.labels("expired", "no_prediction_within_retention").inc(
            outcome.expired_unmatched
        )
        for dead in contents.dead_letters:
            t.dead_letters.labels(dead.topic, dead.error_field).inc()
        for tp, next_offset in contents.next_offsets.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                t.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - next_offset, 0)
                )
