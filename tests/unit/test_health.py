"""``/health`` tells an orchestrator the truth about the consume loop: starting, stalled, back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from ingest.metrics.registry import registry_from_mapping
from tests.fakes import FakeConsumer, MemorySink, loop_over
from workers.host.http import worker_api
from workers.host.worker import STALLED_AFTER_SECONDS, Worker
from workers.settings import Settings


@dataclass
class ManualClock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


async def _health(worker: Worker, path: str = "/health") -> tuple[int, dict[str, object]]:
    transport = httpx.ASGITransport(app=worker_api(worker))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.get(path)
    body = response.json()
    return response.status_code, {k: body[k] for k in ("status", "detail")}


async def test_health_is_unhealthy_while_starting_and_when_the_loop_stalls_then_ok_again() -> None:
    clock = ManualClock()
    worker = Worker(Settings(), registry_from_mapping({}), monotonic=clock)
    worker.health.monotonic = clock
    assert await _health(worker) == (503, {"status": "unhealthy", "detail": "starting"})

    consumer = FakeConsumer([])
    worker.loop = loop = loop_over(consumer, MemorySink(), monotonic=clock)
    worker.health.start()
    assert await _health(worker) == (200, {"status": "ok", "detail": "ok"})
    # Alive, but holding no partitions: not ready to serve.
    assert await _health(worker, "/ready") == (
        503,
        {"status": "unhealthy", "detail": "no partitions assigned"},
    )

    clock.now += STALLED_AFTER_SECONDS + 1  # the loop has not turned since
    status, body = await _health(worker)
    assert status == 503
    assert body["detail"] == f"consume loop has not turned for {STALLED_AFTER_SECONDS + 1:.0f}s"

    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stopping))
    async with asyncio.timeout(10):
        while loop.last_progress != clock.now:  # one turn of the loop
            await consumer.fetched.wait()
            consumer.fetched.clear()
    assert await _health(worker) == (200, {"status": "ok", "detail": "ok"})
    stopping.set()
    await task
