"""What a new user meets first: the commands on the embedded broker with default settings, and
their answers when a server is missing."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import PostgresServer
from tests.integration.harness import (
    PROCESS_CONFIG,
    process_settings,
    producer,
    wait_for_count,
)
from workers.devstack.servers import (
    TansuBroker,
    create_database,
    database_url_with_name,
    free_port,
    start_tansu,
)
from workers.host.startup import ExitCode

REPOSITORY_CONFIG = Path(__file__).resolve().parents[2] / "feedbackflow.toml"


def _start_command(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args], env=env, stdout=out, stderr=out
        )


async def test_the_worker_with_default_settings_runs_on_the_embedded_broker_warning_once(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """It crashed in 3 s with ``Unexpected error during InitProducerIdRequest: UnknownError``:
    its dead-letter producer was idempotent by default, which tansu cannot grant.  Now the
    default (``auto``) asks the broker, warns once and produces without it."""
    settings = await process_settings(kafka.bootstrap, database_url)
    config = tmp_path / "feedbackflow.toml"
    config.write_text(PROCESS_CONFIG.replace('"4s"', '"1s"'))
    log = tmp_path / "worker.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FEEDBACKFLOW_")},
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FEEDBACKFLOW_DATABASE_URL": settings.database_url,
        "FEEDBACKFLOW_CONFIG": str(config),
        "FEEDBACKFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "FEEDBACKFLOW_HTTP_PORT": str(settings.http_port),
    }
    worker = _start_command(["worker"], env, log)
    try:
        async with producer(settings) as ff:
            await ff.send_raw(ff.topics.feedback, b"k", b"not json")  # a dead letter to publish
            await ff.log_prediction(application="generate_haiku")
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.dead_letters", 1, within=60)
        await wait_for_count(db, "SELECT count(*) FROM feedbackflow.predictions", 1)
        assert worker.poll() is None, log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    text = log.read_text()
    assert "UnknownError" in text  # in the one warning, not a crash
    assert text.count("does not take idempotent producers") == 1, text
    assert "We experienced a crash" not in text
    # One format: faust's lines (its worker's start and stop) are in ours, not beside it.
    assert "[^Worker]" in text
    ours = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
    assert [line for line in text.splitlines() if not ours.match(line)] == []
    assert "in windows of 1s" in text


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """A command run as a user runs it, with no FEEDBACKFLOW_* of the suite's environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACKFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env={**base, "FEEDBACKFLOW_START_TIMEOUT_SECONDS": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, result
    assert "Traceback" not in result.stderr, result.stderr
    return lines[-1]


def test_a_refused_postgres_is_one_line_naming_it_after_retrying_with_exit_code_3() -> None:
    """It was a 52-line traceback."""
    port = free_port()
    result = _run(["migrate", "--database-url", f"postgresql://postgres@127.0.0.1:{port}/db"])
    assert result.returncode == 3
    assert ExitCode(3) is ExitCode.POSTGRES_UNREACHABLE
    line = _last_line(result)
    assert line.startswith(f"feedbackflow: PostgreSQL at 127.0.0.1:{port}/db did not answer")
    assert "FEEDBACKFLOW_DATABASE_URL" in line
    assert "waiting for PostgreSQL" in result.stderr  # it retried before giving up


def test_a_missing_database_is_one_line_with_exit_code_4(database_url: str) -> None:
    missing = database_url_with_name(database_url, f"ff_missing_{uuid.uuid4().hex[:8]}")
    result = _run(["retention", "--database-url", missing])
    assert result.returncode == 4
    assert ExitCode(4) is ExitCode.DATABASE_MISSING
    assert "does not exist; create it" in _last_line(result)


def test_a_worker_without_its_broker_says_so_in_json_with_exit_code_7(database_url: str) -> None:
    """It logged "consuming from ..." and exited two seconds later."""
    port = free_port()
    result = _run(
        ["worker", "--log-format", "json"],
        FEEDBACKFLOW_DATABASE_URL=database_url,
        FEEDBACKFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
    )
    assert result.returncode == 7
    assert ExitCode(7) is ExitCode.KAFKA_UNREACHABLE
    line = _last_line(result)
    assert line.startswith(f"feedbackflow: Kafka at 127.0.0.1:{port} did not answer within 1s")
    logged = result.stderr.strip().splitlines()[:-1]
    assert logged, "the waiting was not logged"
    assert all(json.loads(entry)["message"] for entry in logged)
    assert "consuming" not in result.stderr


async def test_a_worker_not_allowed_to_migrate_refuses_a_schema_behind_with_exit_code_6(
    postgres: PostgresServer, kafka: TansuBroker
) -> None:
    name = f"ff_empty_{uuid.uuid4().hex[:8]}"
    empty = await create_database(postgres.admin_url, name)
    try:
        result = await asyncio.to_thread(
            _run,
            ["worker"],
            FEEDBACKFLOW_DATABASE_URL=empty,
            FEEDBACKFLOW_KAFKA_BOOTSTRAP=kafka.bootstrap,
            FEEDBACKFLOW_MIGRATE_ON_START="false",
        )
        assert result.returncode == 6
        assert ExitCode(6) is ExitCode.SCHEMA_BEHIND
        line = _last_line(result)
        assert "the schema lacks migrations 0001_schema" in line
        assert "run `feedbackflow migrate`" in line
        conn = await asyncpg.connect(empty)
        try:  # and it changed nothing
            assert await conn.fetchval("SELECT to_regclass('feedbackflow.predictions')") is None
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(postgres.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def test_version_and_help_that_explains_without_markup() -> None:
    version = _run(["--version"])
    assert version.returncode == 0
    assert version.stdout.strip() == f"feedbackflow {importlib.metadata.version('feedbackflow')}"
    for command in ([], ["worker"], ["migrate"], ["topics"], ["retention"], ["api"]):
        shown = _run([*command, "--help"])
        assert shown.returncode == 0, shown.stderr
        assert "``" not in shown.stdout
    worker_help = _run(["worker", "--help"]).stdout
    assert "FEEDBACKFLOW_KAFKA_BOOTSTRAP; default: 127.0.0.1:9092" in " ".join(worker_help.split())
    assert "exit codes" in _run(["--help"]).stdout


def test_migrate_and_retention_refuse_kafka_options() -> None:
    for command in ("migrate", "retention"):
        result = _run([command, "--kafka-bootstrap", "127.0.0.1:9092"])
        assert result.returncode == 2
        assert "No such option: --kafka-bootstrap" in result.stderr


async def test_topics_creates_them_with_the_partitions_set_and_checks_them(
    kafka: TansuBroker,
) -> None:
    """For clusters where clients may not create topics: an operator's command, with the
    partition count a setting (it was fixed at 4)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    env = {"FEEDBACKFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap, "FEEDBACKFLOW_TOPIC_PREFIX": prefix}
    missing = await asyncio.to_thread(_run, ["topics", "--check"], **env)
    assert missing.returncode == 1
    assert f"topics: {prefix}.predictions: missing" in missing.stderr
    created = await asyncio.to_thread(_run, ["topics"], FEEDBACKFLOW_KAFKA__PARTITIONS="3", **env)
    assert created.returncode == 0, created.stderr
    assert "(3 partitions, replication factor 1)" in created.stdout
    checked = await asyncio.to_thread(_run, ["topics", "--check"], **env)
    assert checked.returncode == 0, checked.stderr
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([f"{prefix}.predictions", f"{prefix}.feedback"])
    finally:
        await admin.close()
    assert [len(d["partitions"]) for d in described] == [3, 3]


async def test_a_command_waits_for_a_broker_that_starts_after_it() -> None:
    """Start-up retries with back-off for ``start_timeout_seconds``: a broker started after the
    command is found, without a restart."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACKFLOW_")}
    env |= {
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "FEEDBACKFLOW_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "FEEDBACKFLOW_START_TIMEOUT_SECONDS": "60",
    }
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "topics",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert command.stderr is not None
    broker = None
    try:
        async with asyncio.timeout(30):
            said = b""
            while b"waiting for Kafka" not in said:
                line = await command.stderr.readline()
                assert line, f"it exited without waiting: {said.decode()}"
                said += line
        broker = await asyncio.to_thread(start_tansu, port)
        async with asyncio.timeout(60):
            out, err = await command.communicate()
    finally:
        if command.returncode is None:
            command.kill()
            await command.wait()
        if broker is not None:
            broker.stop()
    assert command.returncode == 0, err.decode()
    assert "topics: created" in out.decode()


async def test_dev_says_how_long_its_windows_are(
    kafka: TansuBroker, database_url: str, tmp_path: Path
) -> None:
    """With the repository's feedbackflow.toml (5-minute windows) `feedbackflow dev` seemed to
    do nothing for five minutes; its banner and its worker's log now say why."""
    await asyncio.to_thread(shutil.copyfile, REPOSITORY_CONFIG, tmp_path / "feedbackflow.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACKFLOW_")}
    env |= {
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FEEDBACKFLOW_DATABASE_URL": database_url,
        "FEEDBACKFLOW_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "FEEDBACKFLOW_GATEWAY__PORT": str(free_port()),
    }
    dev = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "dev",
        "--http-port",
        str(free_port()),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert dev.stdout is not None
    said = b""
    try:
        async with asyncio.timeout(60):
            while b"in windows of 5m" not in said or b"Windows of 5m" not in said:
                line = await dev.stdout.readline()
                assert line, f"dev exited: {said.decode()}"
                said += line
    finally:
        dev.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await dev.communicate()
    assert b"what you send lands in Postgres when its window closes" in said


def test_a_gateway_whose_port_is_taken_says_so_in_our_format_with_exit_code_9() -> None:
    """uvicorn logged in its own format and exited 3, which reads as "PostgreSQL away"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            ["api", "--port", str(port), "--log-format", "json"],
            FEEDBACKFLOW_GATEWAY__AUTH="false",
        )
    assert result.returncode == 9
    assert ExitCode(9) is ExitCode.PORT_UNAVAILABLE
    assert _last_line(result).startswith(
        f"feedbackflow: the gateway cannot listen on 127.0.0.1:{port}"
    )
    logged = [json.loads(entry) for entry in result.stderr.strip().splitlines()[:-1]]
    bind = [entry for entry in logged if entry["logger"] == "uvicorn.error"]
    assert bind, result.stderr
    assert "address already in use" in bind[0]["message"]
