"""Publishing with the broker's ack: a request is answered 2xx only once Kafka took its events.

One aiokafka producer (``acks=all``) for the whole gateway: concurrent requests' events share
its batches, so the broker sees few large produce requests however many small HTTP requests
arrive.  A request waits for its own events' acks, bounded by ``publish_timeout_seconds``; past
it, or with the broker away, the answer is 503 with ``Retry-After``.  An event that times out
may still reach the broker later: a client that retries should send an ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from ingest.gateway.errors import Refusal
from ingest.kafka_client import ClientSettings, KafkaUnsupported, as_client_settings, start_producer
from workers.postgres.idempotent_requests import PublishedEvent

log = logging.getLogger("feedbackflow.gateway")

# How long a health check waits for the cluster's metadata.
HEALTH_TIMEOUT_SECONDS = 2.0
# Between attempts to reach a broker that was away when the gateway started.
START_RETRY_SECONDS = 1.0


def unavailable(reason: str, retry_after: float) -> Refusal:
    return Refusal(503, "(broker)", reason, retry_after=retry_after)


class KafkaPublisher:
    def __init__(
        self, connection: str | ClientSettings, *, timeout: float, linger_ms: int = 0
    ) -> None:
        self.timeout = timeout
        self._connection, self._linger_ms = connection, linger_ms
        self._bootstrap = as_client_settings(connection).kafka_bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts connecting; the gateway serves (503) until a broker answers."""
        self._starting = asyncio.create_task(self._connect(), name="kafka-producer-start")

    async def _connect(self) -> None:
        while True:
            try:
                # The settings' TLS, SASL and idempotence, as every producer (ingest.kafka_client).
                producer = await start_producer(
                    self._connection,
                    linger_ms=self._linger_ms,
                    request_timeout_ms=max(1000, int(self.timeout * 1000)),
                )
            except KafkaUnsupported as exc:
                log.error("%s; the gateway answers 503 until restarted with it", exc)
                return
            except KafkaError as exc:
                log.warning("broker %s not reachable yet (%s); retrying", self._bootstrap, exc)
                await asyncio.sleep(START_RETRY_SECONDS)
                continue
            self._producer = producer
            log.info("connected to the broker at %s", self._bootstrap)
            return

    async def stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._producer is not None:
            await self._producer.stop()

    async def reachable(self) -> bool:
        """Whether a broker answers a metadata request now."""
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError):
            return False
        return True

    async def publish_each(self, events: Sequence[PublishedEvent]) -> list[Refusal | None]:
        """Send all, wait for all acks (bounded); each event's refusal, or None once acked."""
        producer = self._producer
        if not events:
            return []
        if producer is None:
            return [unavailable("not connected to a broker yet", START_RETRY_SECONDS)] * len(events)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            # aiokafka bounds the wait inside send (for metadata, for room in its buffer) by
            # request_timeout_ms, which is this timeout: no timer of ours is needed here.
            futures = [await producer.send(e.topic, e.value, key=e.key.encode()) for e in events]
        except KafkaTimeoutError:
            reason = f"the broker did not take the events within {self.timeout:g}s"
            return [unavailable(reason, self.timeout)] * len(events)
        except KafkaError as exc:
            return [unavailable(f"the broker refused: {exc}", self.timeout)] * len(events)
        await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        return [self._outcome(future) for future in futures]

    def _outcome(self, future: asyncio.Future[object]) -> Refusal | None:
        if not future.done():
            # Its outcome arrives after the answer; read it then so that it is not reported
            # as an exception nobody retrieved.
            future.add_done_callback(_retrieve)
            reason = f"no acknowledgement from the broker within {self.timeout:g}s"
            return unavailable(reason, self.timeout)
        exc = future.exception()
        if exc is None:
            return None
        if isinstance(exc, MessageSizeTooLargeError):
            return Refusal(413, "(event)", "larger than the broker takes (message.max.bytes)")
        return unavailable(f"the broker refused: {exc!r}", self.timeout)


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
