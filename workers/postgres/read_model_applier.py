"""The read model's applier: folds the notes the windows committed into the rollups, right
after each window, on a connection of its own, so that keeping the rollups costs a window only
its notes (docs/architecture.md, "Read model"; figures in docs/performance.md).

Nothing is lost if the applier stops, fails or the process dies: the notes are durable rows
committed with their window, and the next run (here or in any worker: one applier at a time
holds the database's advisory lock, ``read_model_apply_queue()``) takes every note committed by
then.  The dashboards trail the windows by one apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg

from workers.postgres import read_model_sql

log = logging.getLogger(__name__)

# After a failed run (the database away, say), the next waits this long unless a window asks.
RETRY_SECONDS = 1.0
# The notes' tables are vacuumed after this many notes were taken from them (read_model_sql).
VACUUM_EVERY_NOTES = 200_000


async def apply_read_model(conn: asyncpg.Connection) -> int:
    """Fold every committed note into the read model now; how many notes it took."""
    return int(await conn.fetchval(read_model_sql.APPLY_QUEUE))


async def vacuum_notes(conn: asyncpg.Connection) -> None:
    """Reclaim the rows of the notes applied (outside any transaction)."""
    await conn.execute(read_model_sql.VACUUM_QUEUE)


async def notes_waiting(conn: asyncpg.Connection) -> int:
    """Notes committed and not folded in yet (0: the read model reflects every window)."""
    return int(await conn.fetchval(read_model_sql.NOTES_WAITING))


class ReadModelApplier:
    """Runs ``apply_read_model`` in the background whenever ``notify`` says a window committed.

    Notifications that come while a run is under way collapse into one more run: a run takes
    every note committed before it starts, so the notes of a burst of windows are folded
    together (one set of grouped upserts for all of them)."""

    def __init__(
        self,
        database_url: str,
        applied: Callable[[int, float], None] = lambda notes, seconds: None,
    ) -> None:
        self.database_url = database_url
        self.applied = applied
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._since_vacuum = 0

    def notify(self) -> None:
        """A window committed notes: fold them in soon."""
        self._wanted.set()
        if self._task is None or self._task.done():  # first, or after a run that crashed
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._task.add_done_callback(_log_crash)

    async def close(self) -> None:
        """Stop; a run under way is rolled back (its notes wait for the next applier)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            started = time.perf_counter()
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.database_url)
                notes = await apply_read_model(self._conn)
                self._since_vacuum += notes
                if self._since_vacuum >= VACUUM_EVERY_NOTES:
                    await vacuum_notes(self._conn)
                    self._since_vacuum = 0
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("read model apply failed, will retry: %r", exc)
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wanted.wait(), RETRY_SECONDS)
                self._wanted.set()
                continue
            self.applied(notes, time.perf_counter() - started)


def _log_crash(task: asyncio.Task[None]) -> None:
    """A run that failed in a way no retry covers (a bug) is logged; the next notify starts
    the applier again, and the notes wait meanwhile."""
    if not task.cancelled() and task.exception() is not None:
        log.error("read model applier stopped", exc_info=task.exception())
