"""Every Kafka connection speaks TLS when the settings say so: the SDK, the topic admin, the
start-up check, the gateway's publisher and the worker's consumer and producers.

The embedded tansu (0.6.0) cannot serve TLS here (its ``--cert`` and ``--key`` flags refuse to
be given together), so a listener on a real socket records what each client's first bytes are:
a TLS ClientHello (record type 0x16) or a plaintext Kafka request.  The options themselves are
checked in tests/unit/test_kafka_client.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ingest.gateway.publisher import KafkaPublisher
from ingest.kafka_client import KafkaSettings
from ingest.sdk.producer import FeedbackflowProducer
from ingest.topics import TopicNames, create_topics
from tests.integration.harness import metric_registry
from tests.unit.certificates import self_signed_certificate
from workers.host import worker as worker_module
from workers.host.startup import check_kafka
from workers.host.worker import Worker
from workers.settings import Settings

TLS_HANDSHAKE = 0x16


@dataclass
class FirstBytes:
    """What each connection to the listener began with."""

    port: int = 0
    seen: list[bytes] = field(default_factory=list)
    # Set at the first connection's first bytes.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def tls(self) -> list[bool]:
        return [first[:1] == bytes([TLS_HANDSHAKE]) for first in self.seen]


@contextlib.asynccontextmanager
async def first_bytes_listener() -> AsyncIterator[FirstBytes]:
    record = FirstBytes()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            async with asyncio.timeout(5):
                record.seen.append(await reader.readexactly(3))
                record.arrived.set()
        writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    record.port = server.sockets[0].getsockname()[1]
    try:
        yield record
    finally:
        server.close()
        await server.wait_closed()


def _tls_settings(port: int, ca: Path) -> Settings:
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{port}",
        kafka=KafkaSettings(security_protocol="SSL", ssl_cafile=ca),
        kafka_idempotence="auto",
        start_timeout_seconds=1,
    )


Connect = Callable[[Settings, FirstBytes], Awaitable[Any]]


async def _attempt(connect: Connect, settings: Settings, listener: FirstBytes) -> None:
    """Run ``connect`` until it gives up: the listener is no broker."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await connect(settings, listener)


async def _sdk(settings: Settings, _listener: FirstBytes) -> None:
    await FeedbackflowProducer(settings=settings).start()


async def _admin(settings: Settings, _listener: FirstBytes) -> None:
    await create_topics(settings, TopicNames())


async def _startup(settings: Settings, _listener: FirstBytes) -> None:
    await check_kafka(settings)


async def _gateway(settings: Settings, listener: FirstBytes) -> None:
    """The publisher connects in the background: wait until the listener has seen it."""
    publisher = KafkaPublisher(settings, timeout=1)
    await publisher.start()
    try:
        async with asyncio.timeout(10):
            await listener.arrived.wait()
    finally:
        await publisher.stop()


@pytest.mark.parametrize(
    "connect", [_sdk, _admin, _startup, _gateway], ids=["sdk", "admin", "startup", "gateway"]
)
async def test_each_client_starts_with_a_tls_handshake(connect: Connect, tmp_path: Path) -> None:
    ca = self_signed_certificate(tmp_path).cert
    async with first_bytes_listener() as listener:
        await _attempt(connect, _tls_settings(listener.port, ca), listener)
        plain = await _plaintext_control(connect, ca)
    assert listener.tls, "nothing connected"
    assert all(listener.tls), listener.seen
    assert plain, "the control (PLAINTEXT) sent a Kafka request in the clear"


async def _plaintext_control(connect: Connect, ca: Path) -> bool:
    """The same client without TLS sends plaintext: the listener tells the two apart."""
    async with first_bytes_listener() as control:
        plain = _tls_settings(control.port, ca).model_copy(update={"kafka": KafkaSettings()})
        await _attempt(connect, plain, control)
    return bool(control.seen) and not any(control.tls)


async def test_the_worker_builds_its_consumer_and_producer_from_the_security_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker's consumer and dead-letter producer are reached only past topic creation,
    which no fake listener answers: their options are recorded where they are built."""
    ca = self_signed_certificate(tmp_path).cert
    settings = _tls_settings(1, ca)
    built: dict[str, Any] = {}

    class Stop(Exception):
        pass

    class RecordingConsumer:
        def __init__(self, **options: Any) -> None:
            built["consumer"] = options

        def subscribe(self, *args: Any, **kwargs: Any) -> None:
            pass

        async def start(self) -> None:
            raise Stop

        async def stop(self) -> None:
            pass

    class Producer:
        async def stop(self) -> None:
            pass

    async def recording_start_producer(given: Settings, **options: Any) -> Producer:
        built["producer"] = given
        return Producer()

    async def recording_create_topics(given: Settings, topics: TopicNames) -> None:
        built["topics"] = given

    async def migrated() -> None:
        pass

    monkeypatch.setattr(worker_module, "AIOKafkaConsumer", RecordingConsumer)
    monkeypatch.setattr(worker_module, "start_producer", recording_start_producer)
    monkeypatch.setattr(worker_module, "create_topics", recording_create_topics)
    worker = Worker(settings, metric_registry())
    monkeypatch.setattr(worker, "_migrate", migrated)
    with pytest.raises(Stop):
        await worker.run()
    assert built["consumer"]["security_protocol"] == "SSL"
    assert built["consumer"]["ssl_context"].get_ca_certs()
    assert built["producer"].kafka.security_protocol == "SSL"
    assert built["topics"].kafka.security_protocol == "SSL"
