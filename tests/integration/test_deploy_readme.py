"""The parts of "Deploying" that need no Docker, run for real against the suite's PostgreSQL:
the compose stack's init script makes a login that reads through ``feedbackflow_reader`` once
``migrate`` has run and can write nothing; the README's SQL does the same on a database that is
already migrated; its ``feedbackflow keys create`` command works as written."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import PostgresServer
from tests.deploy_files import ROOT, code_blocks, readme_section
from workers.devstack.servers import create_database
from workers.postgres.migrate import migrate

INIT_SCRIPT = ROOT / "deploy" / "postgres" / "initdb" / "10-grafana-login.sh"
FEEDBACKFLOW = Path(sys.executable).parent / "feedbackflow"


def _as_login(url: str, login: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{login}:{password}@{host}"))


@pytest.fixture
async def login(postgres: PostgresServer) -> AsyncIterator[str]:
    """A role name for this test only (roles are the whole server's), dropped afterwards."""
    name = f"ff_grafana_{uuid.uuid4().hex[:10]}"
    yield name
    conn = await asyncpg.connect(postgres.admin_url)
    try:
        await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def _reads_and_cannot_write(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM feedbackflow.predictions") == 0
        assert await conn.fetchval("SELECT count(*) FROM feedbackflow.metric_summary_hourly") == 0
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("DELETE FROM feedbackflow.feedback")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM feedbackflow.api_keys")
        assert (
            await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            is False
        )
    finally:
        await conn.close()


async def test_the_init_script_makes_a_reader_login_before_migrate(
    postgres: PostgresServer, login: str
) -> None:
    name = f"ff_{os.getpid()}_{uuid.uuid4().hex[:10]}"  # dropped with the suite's databases
    url = await create_database(postgres.admin_url, name)
    parts = urlsplit(postgres.admin_url)
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGPASSWORD": parts.password or "",
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_DB": name,
        "GRAFANA_DB_USER": login,
        "GRAFANA_DB_PASSWORD": "reader-password",
    }
    # As the postgres image runs it: with sh, on a database nothing has migrated yet.
    done = await asyncio.to_thread(
        subprocess.run,
        ["/bin/sh", str(INIT_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    await _reads_and_cannot_write(_as_login(url, login, "reader-password"))


async def test_the_readmes_sql_makes_a_reader_login(database_url: str, login: str) -> None:
    (sql,) = code_blocks(readme_section("Deploying"), "sql")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql.replace("grafana", f'"{login}"'))
    finally:
        await conn.close()
    await _reads_and_cannot_write(_as_login(database_url, login, "change-me"))


def test_the_readmes_keys_command_works_as_written(database_url: str) -> None:
    section = readme_section("Deploying")
    (command,) = {
        line.strip("`")
        for line in section.replace("\n", " ").split("`")
        if line.startswith("feedbackflow keys create")
    }
    env = {**os.environ, "FEEDBACKFLOW_DATABASE_URL": database_url}
    created = subprocess.run(
        [str(FEEDBACKFLOW), *shlex.split(command)[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("ffk_")
    listed = subprocess.run(
        [str(FEEDBACKFLOW), "keys", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "checkout-service" in listed.stdout
    assert "feedback,predictions" in listed.stdout
