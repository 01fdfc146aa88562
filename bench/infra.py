"""The stack a benchmark run needs: a tansu broker and fresh PostgreSQL databases.

Everything is on 127.0.0.1 and owned by the run: the broker is stopped and every ``ffbench_*``
database dropped at the end, so a run leaves nothing behind and never touches other data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from workers.devstack.servers import (
    EmbeddedPostgres,
    TansuBroker,
    create_database,
    postgres_answers,
    start_embedded_postgres,
    start_tansu,
)
from workers.postgres.migrate import migrate

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Stack:
    """Broker + Postgres server; ``database()`` hands out fresh migrated databases."""

    broker: TansuBroker | None
    admin_url: str
    embedded: EmbeddedPostgres | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    databases: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        if self.broker is None:
            raise RuntimeError("this run started no broker")
        return self.broker.bootstrap

    async def database(self, purpose: str) -> str:
        """A new, migrated database named ``ffbench_<run>_<purpose>``; returns its URL."""
        name = f"ffbench_{self.run_id}_{purpose}"
        url = await create_database(self.admin_url, name)
        self.databases.append(name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return url

    async def drop_databases(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for name in self.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        self.databases.clear()


@asynccontextmanager
async def running_stack(with_broker: bool = True) -> AsyncIterator[Stack]:
    """Start tansu (memory storage, free port) and find Postgres; tear both down afterwards."""
    embedded: EmbeddedPostgres | None = None
    admin_url = LOCAL_POSTGRES
    if not await postgres_answers(admin_url):
        embedded = start_embedded_postgres()
        admin_url = embedded.url
    broker = start_tansu() if with_broker else None
    stack = Stack(broker=broker, admin_url=admin_url, embedded=embedded)
    try:
        yield stack
    finally:
        try:
            await stack.drop_databases()
        finally:
            if broker is not None:
                broker.stop()
            if embedded is not None:
                embedded.stop()
