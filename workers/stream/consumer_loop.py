"""ConsumerLoop: fetch, submit, poll.  Everything else is a step of the chain.

The loop asks the chain how many records it wants (its demand) and which partitions to read
(the hold-back plans that), fetches them, reads where the consumer stands, submits the fetch to
the chain and polls it.  With no demand (the window is closed and the writes in flight are at
their limit) it fetches nothing and lets the poll wait for a write to finish: that is the
back-pressure.  Per event there is decoding and a few dict operations; the awaits (fetch,
transaction, commit) are per batch and per window.

On a partition revocation the chain is joined (written and committed) by a deadline, then built
anew; past the deadline it is terminated: what it held is abandoned uncommitted, and the new
owner of the partitions reads it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from workers.health import PipelineHealth
from workers.stream.chain import Chain
from workers.stream.messages import Fetched, Partition, Progress
from workers.stream.step import FlushTimeout
from workers.telemetry import WorkerTelemetry

log = logging.getLogger("feedbackflow.worker")

# The longest a fetch waits for records while a window is open, and a poll for a write while
# the chain has no demand: both keep the loop turning (and /health's view of it fresh).
MAX_WAIT_SECONDS = 0.5


async def read_progress(consumer: AIOKafkaConsumer) -> Progress:
    """Positions and high watermarks of the assigned partitions, as of the last fetch."""
    # High watermarks first, with no await in between: a rebalance cannot unassign a
    # partition under them (aiokafka asserts on an unassigned one).
    highwaters = {tp: consumer.highwater(tp) for tp in consumer.assignment()}
    positions: dict[Partition, int] = {}
    for tp in highwaters:
        try:
            positions[tp] = await consumer.position(tp)
        except IllegalStateError:
            continue  # revoked meanwhile
    return Progress(positions, highwaters)


class _JoinOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Write what was read before the partitions move, so the new owner starts after it.
        await self.loop.revoke()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        return None


class ConsumerLoop:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Iterable[str],
        build_chain: Callable[[], Chain],
        telemetry: WorkerTelemetry,
        fetch_max_records: int,
        revoke_flush_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        health: PipelineHealth | None = None,
    ) -> None:
        self.consumer = consumer
        self.topics = tuple(topics)
        self.build_chain = build_chain
        self.telemetry = telemetry
        self.fetch_max_records = fetch_max_records
        self.revoke_flush_seconds = revoke_flush_seconds
        self.monotonic = monotonic
        self.health = health or PipelineHealth()
        self.chain = build_chain()
        # When the loop last turned: /health reports a loop that stopped turning.
        self.last_progress = monotonic()
        # Held by whoever submits to, polls or joins the chain: the loop or a revocation.
        self._lock = asyncio.Lock()
        # A write failure met while joining on revocation, raised by the loop's next turn.
        self._failure: BaseException | None = None

    def subscribe(self) -> None:
        self.consumer.subscribe(list(self.topics), listener=_JoinOnRevoke(self))

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set; then write and commit what was read."""
        try:
            while not stopping.is_set():
                await self._turn()
                self.last_progress = self.monotonic()
            async with self._lock:
                await self.chain.head.join(deadline=None)
        except BaseException:
            self.chain.head.terminate()  # no write outlives the loop
            raise

    async def _turn(self) -> None:
        if self._failure is not None:
            raise self._failure
        chain = self.chain
        demand = chain.head.demand()
        if not demand:
            async with self._lock:
                await chain.head.poll(wait=MAX_WAIT_SECONDS)
            return
        partitions, most = chain.head.what_to_read(
            self.consumer.assignment(), min(demand, self.fetch_max_records)
        )
        wait = min(chain.window.seconds_left(), MAX_WAIT_SECONDS)
        batches: dict[Any, list[Any]] = await self.consumer.getmany(
            *partitions, timeout_ms=int(wait * 1000) or 1, max_records=most
        )
        consumed = self.telemetry.events_consumed
        for tp, records in batches.items():
            consumed.labels(tp.topic).inc(len(records))
        self._observe_the_broker()
        async with self._lock:
            if self.chain is not chain:
                return  # revoked while fetching: the new assignment reads these again
            progress = await read_progress(self.consumer)
            self.health.partitions, self.health.lag = len(progress.highwaters), progress.lag
            self.telemetry.lag.fetched(progress.highwaters)
            chain.head.submit(Fetched(batches, progress))
            await chain.head.poll()

    def _observe_the_broker(self) -> None:
        """Tell health whether the group's coordinator answers: aiokafka hides failed fetches
        (it returns nothing and retries), but marks the coordinator dead when heartbeats fail,
        so an idle worker cut off from the broker is reported too, not only one with offsets to
        commit.  A private attribute of a pinned dependency, checked by the broker-cut test
        (tests/faults/test_outages.py)."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is not None and coordinator.coordinator_id is None:
            self.health.failing("broker", "the group coordinator does not answer")
        else:
            self.health.working("broker")

    async def revoke(self) -> None:
        async with self._lock:
            deadline = time.monotonic() + self.revoke_flush_seconds  # the steps' clock
            try:
                await self.chain.head.join(deadline)
            except FlushTimeout:
                log.warning(
                    "revocation: windows not written within %.0fs are abandoned uncommitted "
                    "(the partitions' next owner reads them again)",
                    self.revoke_flush_seconds,
                )
                self.telemetry.windows.labels("abandoned").inc()
                self.chain.head.terminate()
            except Exception as exc:
                self.chain.head.terminate()
                self._failure = exc
            self.chain = self.build_chain()
