"""Waiting for a server that does not answer yet, at start-up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka.errors import KafkaError

from workers.health import PipelineHealth

log = logging.getLogger("feedbackflow.worker")


async def until_it_answers(
    what: str,
    attempt: Callable[[], Awaitable[object]],
    stopping: asyncio.Event,
    health: PipelineHealth,
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    say_every: float = 30.0,
) -> None:
    """Retry ``attempt`` until it succeeds: a worker started before its database or broker
    waits for them, saying so in one line now and then, instead of a traceback and an exit."""
    delay, said_at = first_delay, -say_every
    while True:
        try:
            await attempt()
        except (OSError, asyncpg.PostgresError, KafkaError) as exc:
            health.failing("start", f"{what} does not answer: {exc!r}")
            now = time.monotonic()
            if now - said_at >= say_every:
                log.warning(
                    "waiting for %s: %s (retrying every %.0fs at most)", what, exc, max_delay
                )
                said_at = now
            if stopping.is_set():
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        health.working("start")
        return
