"""PostgresSink: writes one window in one transaction, idempotently, on connections it owns.

The caller commits Kafka offsets only after ``write`` returns: a crash before that replays the
window, and the replay inserts nothing new (ids are idempotency keys), so Postgres holds every
event exactly once from an at-least-once stream.

``PostgresSink`` is the ``workers.stream.sink.Sink`` the worker uses: one ``SinkConnection`` per
window in flight, opened on demand, reused, and closed when it fails.  ``SinkConnection`` writes
windows on one given connection (the bench and tests time and probe it directly).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter

import asyncpg

from workers.postgres import join_sql, key_directory, read_model_sql, selector_sql
from workers.postgres.partitions import PartitionCatalog, day_of, days_of
from workers.postgres.read_model_changes import predictions_per_bucket
from workers.postgres.selectors import SelectorStep
from workers.stream.decode import FeedbackRow, PredictionRow, SelectorRow, as_time
from workers.stream.sink import SinkRefused, SinkUnavailable, WindowOutcome
from workers.stream.window import WindowContents
from workers.time_spans import DEDUPE_SPAN, ID_TIME_SPAN

QUEUE_STATS_MIN_CHANGES = 1000
# Above this many queued feedback per prediction of the window, gathering the queued feedback the
# window resolves looks each prediction up in the queue's indexes instead of reading the queue.
QUEUE_PROBE_RATIO = 4


_TS = itemgetter(PredictionRow._fields.index("ts"))
_FEEDBACK_TS = itemgetter(FeedbackRow._fields.index("ts"))
_TARGET_ID_TIME = itemgetter(FeedbackRow._fields.index("target_id_time"))
_TARGET_JOIN_KEY = itemgetter(FeedbackRow._fields.index("target_join_key"))
_SELECTOR_TS = itemgetter(SelectorRow._fields.index("ts"))


def _span(times: Iterable[int], widen: timedelta = DEDUPE_SPAN) -> tuple[datetime, datetime]:
    """Earliest and latest of ``times`` (micros), widened: constant partition bounds for the
    window's statements."""
    seen = list(times)
    return as_time(min(seen)) - widen, as_time(max(seen)) + widen


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 12`` or ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


# Retried by class, never by message text: the connection went away, or Postgres asks for a retry.
RETRYABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    # Another worker wrote the same event at the same moment (join_sql.py): the retry finds its
    # committed copy and skips it.
    asyncpg.UniqueViolationError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


# The data is at fault, not the connection: a value the database will not store (class 22:
# invalid text, out of range, untranslatable character; 23: a constraint; 54: too large).  A
# retry fails the same way, so the window is split until the rows at fault are found
# (workers.stream.refusals).  unique_violation is RETRYABLE above and is caught first.
DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)


def _refusal(exc: asyncpg.PostgresError) -> SinkRefused:
    """Postgres's own words, with the column it blamed where it named one (COPY says so in
    its context line: ``COPY stage_predictions, line 1, column inputs: ...``)."""
    reason = exc.args[0] if exc.args else type(exc).__name__
    detail = getattr(exc, "detail", None)
    if detail:
        reason = f"{reason}: {detail}"
    column = getattr(exc, "column_name", None)
    context = getattr(exc, "context", None) or ""
    if column is None and ", column " in context:
        column = context.split(", column ", 1)[1].split(":", 1)[0].strip() or None
    return SinkRefused(f"{reason} (SQLSTATE {exc.sqlstate})", column)


@dataclass
class QueueStatistics:
    """What a worker knows of the pending queue's size.  One per database, shared by the sinks
    (connections) that write to it: the queue and its changes are the same for all of them."""

    rows: float = 0.0  # the planner's estimate, as of the last refresh
    changes: float = QUEUE_STATS_MIN_CHANGES  # rows in or out since then: refresh at once


class SinkConnection:
    """Writes windows on one connection, whose staging tables it creates once."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        retention: timedelta,
        partitions: PartitionCatalog | None = None,
        queue: QueueStatistics | None = None,
        selectable_tags: tuple[str, ...] = (),
    ) -> None:
        self.conn = conn
        self.retention = retention
        self.partitions = partitions or PartitionCatalog()
        self.queue = queue or QueueStatistics()
        self.selectors = SelectorStep(selectable_tags, retention)
        self._staged = False

    async def _ensure_partitions(self, contents: WindowContents) -> None:
        conn = self.conn
        await self.partitions.ensure(conn, "predictions", days_of(map(_TS, contents.predictions)))
        await self.partitions.ensure(
            conn, "feedback", days_of(map(_FEEDBACK_TS, contents.feedback))
        )
        await self.partitions.ensure(
            conn, "dead_letters", {day_of(d.kafka_ts) for d in contents.dead_letters}
        )
        if self.selectors.enabled:
            await self.partitions.ensure(
                conn, "prediction_tags", days_of(map(_TS, contents.predictions))
            )
            selector_days = days_of(map(_SELECTOR_TS, contents.selectors))
            await self.partitions.ensure(conn, "selector_feedback", selector_days)
            await self.partitions.ensure(conn, "feedback", selector_days)

    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        """Write the window in one transaction.  ``resolve_after``, if given, is awaited before
        the window resolves any feedback: the writer passes the commit of the window before,
        so that resolution runs in window order (workers.stream.window_writer)."""
        conn = self.conn
        if not self._staged:
            await conn.execute(join_sql.CREATE_STAGING + selector_sql.CREATE_STAGING)
            self._staged = True
        await self._ensure_partitions(contents)
        await self._refresh_queue_statistics()
        async with conn.transaction():
            await self._stage(contents)
            predictions = 0
            if contents.predictions:
                low, high = _span(map(_TS, contents.predictions))
                predictions = _count(await conn.execute(join_sql.INSERT_PREDICTIONS, low, high))
                if predictions == len(contents.predictions):
                    counted = predictions_per_bucket(contents.predictions)
                    await conn.execute(read_model_sql.NOTE_PREDICTIONS, *counted)
                elif predictions:  # a replay: some were stored before
                    await conn.execute(read_model_sql.NOTE_PREDICTIONS_INSERTED, low, high)
                # What feedback by any target but a UUIDv7 id is looked up in (key_directory).
                await conn.execute(key_directory.INSERT_KEYS, low, high)
            await self.selectors.index_tags(conn, contents)
            if resolve_after is not None:
                await resolve_after()
            await conn.execute(join_sql.RESOLUTION_LOCK)
            resolved_new: Counter[str] = Counter()
            if contents.feedback:
                resolved_new = await self._insert_feedback(contents, now)
            feedback = sum(resolved_new.values())
            resolved_queued: Counter[str] = Counter()
            if contents.predictions:
                resolved_queued = await self._resolve_queued(len(contents.predictions), now)
            selected = await self.selectors.resolve(
                conn,
                contents,
                now,
                _span(map(_SELECTOR_TS, contents.selectors)) if contents.selectors else None,
            )
            feedback += selected["joined"]
            resolved = resolved_new + resolved_queued + selected
            resolved.pop("pending", None)
            await conn.execute(read_model_sql.NOTE_EXPIRY, now - self.retention)
            unmatched = _count(
                await conn.execute(join_sql.EXPIRE_UNMATCHED, now - self.retention, now)
            )
            queued = resolved_new.get("pending", 0)
            self.queue.changes += queued + sum(resolved_queued.values()) + unmatched
            dead = 0
            if contents.dead_letters:
                dead = _count(await conn.execute(join_sql.INSERT_DEAD_LETTERS))
        return WindowOutcome(predictions, feedback, dead, resolved, unmatched, queued)

    async def _refresh_queue_statistics(self) -> None:
        """Analyze the pending queue once it changed by 10% (and 1,000 rows) since the last time:
        autovacuum's own rule, applied per window, since the queue swings faster than autovacuum
        looks (and autovacuum may be off)."""
        queue = self.queue
        if queue.changes < max(QUEUE_STATS_MIN_CHANGES, 0.1 * queue.rows):
            return
        await self.conn.execute(join_sql.ANALYZE_QUEUE)
        queue.rows = await self.conn.fetchval(join_sql.QUEUE_SIZE_ESTIMATE)
        queue.changes = 0

    async def _stage(self, contents: WindowContents) -> None:
        for table, rows, columns in (
            ("stage_predictions", contents.predictions, join_sql.STAGED_PREDICTION_COLUMNS),
            ("stage_feedback", contents.feedback, join_sql.STAGED_FEEDBACK_COLUMNS),
            ("stage_dead_letters", contents.dead_letters, join_sql.DEAD_LETTER_COLUMNS),
        ):
            if rows:
                # Plain tuples: asyncpg reads a tuple subclass's items through the slow generic
                # path, which was measured to cost more per row than the copy to tuples
                # (docs/performance.md).
                await self.conn.copy_records_to_table(
                    table, records=map(tuple, rows), columns=columns
                )
        await self.selectors.stage(self.conn, contents)

    async def _insert_feedback(self, contents: WindowContents, now: datetime) -> Counter[str]:
        """Insert the window's new feedback resolved; counts by status, pending included."""
        low, high = _span(map(_FEEDBACK_TS, contents.feedback))
        lookups = frozenset(
            join_sql.target_lookup(f.target_prediction_id, f.target_id_time, f.target_join_key)
            for f in contents.feedback
        )
        id_times = [t for t in map(_TARGET_ID_TIME, contents.feedback) if t is not None]
        if "uuid7_key" in lookups:  # and the times of join keys that spell a UUIDv7
            keys = filter(None, map(_TARGET_JOIN_KEY, contents.feedback))
            id_times += filter(None, map(join_sql.join_key_time, keys))
        # $5, $6 exist with a UUIDv7 look-up (uuid7_id, uuid7_key).
        id_bounds = _span(id_times, ID_TIME_SPAN) if id_times else ()
        rows = await self.conn.fetch(
            join_sql.insert_feedback(lookups), low, high, self.retention, now, *id_bounds
        )
        return Counter({r["status"]: r["feedback"] for r in rows})

    async def _resolve_queued(self, predictions: int, now: datetime) -> Counter[str]:
        """Resolve queued feedback that this window's predictions name; counts by status."""
        conn = self.conn
        probe = self.queue.rows > QUEUE_PROBE_RATIO * predictions
        if probe:
            await conn.execute(join_sql.PROBE_THE_QUEUE)
        gathered = _count(await conn.execute(join_sql.GATHER_QUEUED))
        if probe:
            await conn.execute(join_sql.PLAN_FREELY)
        if not gathered:
            return Counter()
        await conn.execute(join_sql.ANALYZE_QUEUED)
        bounds = await conn.fetchrow(join_sql.QUEUED_BOUNDS)
        if bounds is None or bounds["ts_min"] is None:
            return Counter()
        lookups = frozenset(name for name in join_sql.TARGET_LOOKUPS if bounds[name])
        id_bounds: tuple[datetime, ...] = ()  # $5, $6 exist with a UUIDv7 look-up
        if bounds["id_time_min"] is not None:
            id_bounds = (
                bounds["id_time_min"] - ID_TIME_SPAN,
                bounds["id_time_max"] + ID_TIME_SPAN,
            )
        rows = await conn.fetch(
            join_sql.resolve_queued(lookups),
            self.retention,
            now,
            bounds["ts_min"],
            bounds["ts_max"],
            *id_bounds,
        )
        return Counter({r["status"]: r["feedback"] for r in rows})


class PostgresSink:
    """The worker's sink: connections to ``database_url``, one per window being written."""

    def __init__(
        self,
        database_url: str,
        retention: timedelta,
        selectable_tags: tuple[str, ...] = (),
        written: Callable[[], None] = lambda: None,
    ) -> None:
        self.database_url = database_url
        self.retention = retention
        self.selectable_tags = selectable_tags
        # Called after each window commits: the read model's applier folds its notes in
        # (workers.postgres.read_model_applier).
        self.written = written
        # Shared by the connections: both describe the database, not a connection.
        self.partitions = PartitionCatalog()
        self.queue = QueueStatistics()
        self._idle: list[SinkConnection] = []

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def write(
        self,
        contents: WindowContents,
        now: datetime,
        resolve_after: Callable[[], Awaitable[object]] | None = None,
    ) -> WindowOutcome:
        writer: SinkConnection | None = self._idle.pop() if self._idle else None
        try:
            if writer is None:
                writer = SinkConnection(
                    await asyncpg.connect(self.database_url),
                    self.retention,
                    partitions=self.partitions,
                    queue=self.queue,
                    selectable_tags=self.selectable_tags,
                )
            outcome = await writer.write(contents, now, resolve_after)
        except RETRYABLE as exc:
            if writer is not None:
                await _close(writer.conn)
            raise SinkUnavailable(f"window write failed: {exc!r}") from exc
        except DATA_ERRORS as exc:
            assert writer is not None  # connecting raises no data error
            self._idle.append(writer)  # rolled back; the connection is sound
            raise _refusal(exc) from exc
        except BaseException:
            if writer is not None:  # mid-transaction, maybe cancelled: no await, just close
                writer.conn.terminate()
            raise
        self._idle.append(writer)
        self.written()
        return outcome

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for writer in idle:
            await _close(writer.conn)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=2)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()
