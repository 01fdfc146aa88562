"""Start-up: wait for PostgreSQL and Kafka (with back-off, for ``start_timeout_seconds``), check
the schema, and fail in one line that names the server, its address and what to do.

A command that cannot start exits with a code that says why (``ExitCode``), so that a shell
script, systemd or Kubernetes can tell a database that is missing from a broker that is away,
instead of a 52-line traceback or a worker that logs "consuming" and exits two seconds later.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from ingest.kafka_client import KafkaUnsupported, client_options, producer_idempotence
from workers.postgres.migrate import Migration, migrate, pending_migrations
from workers.settings import Settings

log = logging.getLogger("feedbackflow")

T = TypeVar("T")


class ExitCode(enum.IntEnum):
    """Why a command stopped (documented in ``feedbackflow --help``)."""

    CONFIG = 2  # a bad flag, setting or metric config
    POSTGRES_UNREACHABLE = 3
    DATABASE_MISSING = 4
    POSTGRES_LOGIN = 5
    SCHEMA_BEHIND = 6
    KAFKA_UNREACHABLE = 7
    KAFKA_UNSUPPORTED = 8
    PORT_UNAVAILABLE = 9  # the gateway cannot listen where it is told to


class StartupFailure(Exception):
    """One line for the operator, and the exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def postgres_address(url: str) -> str:
    """``host:port/database`` of a URL, without its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


async def _with_back_off(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    transient: tuple[type[BaseException], ...],
    within: float,
    give_up: Callable[[BaseException], StartupFailure],
) -> T:
    """``attempt`` until it succeeds or ``within`` seconds have passed, saying so each time."""
    deadline = time.monotonic() + within
    delay = 0.5
    while True:
        try:
            return await attempt()
        except transient as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise give_up(exc) from None
            wait = min(delay, left)
            log.warning("waiting for %s: %s; retrying in %.1fs", what, _said(exc), wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 10.0)


def _said(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def connect_postgres(settings: Settings) -> asyncpg.Connection:
    """A connection, waiting up to ``start_timeout_seconds`` for the server to answer."""
    url, where = settings.database_url, postgres_address(settings.database_url)
    timeout = settings.start_timeout_seconds

    async def attempt() -> asyncpg.Connection:
        try:
            return await asyncpg.connect(url, timeout=10)
        except asyncpg.InvalidCatalogNameError as exc:
            raise StartupFailure(
                ExitCode.DATABASE_MISSING,
                f"PostgreSQL at {where}: {exc}; create it (createdb) or point "
                "FEEDBACKFLOW_DATABASE_URL / --database-url at the right one",
            ) from None
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
        ) as exc:
            raise StartupFailure(
                ExitCode.POSTGRES_LOGIN,
                f"PostgreSQL at {where} refused the login: {exc}; fix the user or password in "
                "FEEDBACKFLOW_DATABASE_URL",
            ) from None

    def give_up(exc: BaseException) -> StartupFailure:
        return StartupFailure(
            ExitCode.POSTGRES_UNREACHABLE,
            f"PostgreSQL at {where} did not answer within {timeout:g}s ({_said(exc)}): start it, "
            "or point FEEDBACKFLOW_DATABASE_URL at it (the wait: "
            "FEEDBACKFLOW_START_TIMEOUT_SECONDS)",
        )

    transient = (
        OSError,
        TimeoutError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
    )
    return await _with_back_off(f"PostgreSQL at {where}", attempt, transient, timeout, give_up)


async def migrated(settings: Settings) -> list[Migration]:
    """Apply the missing migrations (``feedbackflow migrate``, ``dev``); what was applied."""
    conn = await connect_postgres(settings)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def ensure_schema(conn: asyncpg.Connection, settings: Settings) -> None:
    """Migrate when the settings allow it; otherwise refuse a schema behind this code."""
    if settings.migrate_on_start:
        await migrate(conn)
        return
    pending = await pending_migrations(conn)
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise StartupFailure(
            ExitCode.SCHEMA_BEHIND,
            f"PostgreSQL at {postgres_address(settings.database_url)}: the schema lacks "
            f"migrations {names}; run `feedbackflow migrate` (with DDL rights), or set "
            "FEEDBACKFLOW_MIGRATE_ON_START=true",
        )


async def check_kafka(settings: Settings) -> None:
    """The brokers answer (within ``start_timeout_seconds``), and grant what the settings ask."""
    address, timeout = settings.kafka_bootstrap, settings.start_timeout_seconds

    async def attempt() -> None:
        client = AIOKafkaClient(**client_options(settings))
        try:
            await client.bootstrap()
        finally:
            await client.close()

    def give_up(exc: BaseException) -> StartupFailure:
        return StartupFailure(
            ExitCode.KAFKA_UNREACHABLE,
            f"Kafka at {address} did not answer within {timeout:g}s ({_said(exc)}): start it, or "
            "point FEEDBACKFLOW_KAFKA_BOOTSTRAP at it (TLS and SASL: FEEDBACKFLOW_KAFKA__*)",
        )

    await _with_back_off(f"Kafka at {address}", attempt, (KafkaError, OSError), timeout, give_up)
    try:
        await producer_idempotence(settings)
    except KafkaUnsupported as exc:
        raise StartupFailure(ExitCode.KAFKA_UNSUPPORTED, str(exc)) from None


async def worker_preflight(settings: Settings) -> None:
    """What ``feedbackflow worker`` checks before it starts consuming."""
    conn = await connect_postgres(settings)
    try:
        await ensure_schema(conn, settings)
    finally:
        await conn.close()
    await check_kafka(settings)
