"""``feedbackflow``: the command line (Click), one command per process or job.

migrate, worker, api, keys, topics, retention, read-model, backfill, export, report, dev, demo,
schemas, dashboards.
Every option that sets a setting is made from the settings object (``workers.settings``): its
help names the ``FEEDBACKFLOW_*`` variable and shows the default.  A flag wins over the
environment, which wins over the config file's ``[pipeline]`` table and the defaults.  A command
that cannot start says why in one line and exits with a code that says it
(``workers.host.startup.ExitCode``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ingest.backfill import command as backfill_command
from ingest.metrics.registry import ConfigError, MetricRegistry, load_registry
from workers.clock import SystemClock
from workers.export import command as export_command
from workers.host.logs import setup_logging
from workers.host.startup import (
    ExitCode,
    StartupFailure,
    check_kafka,
    connect_postgres,
    migrated,
    worker_preflight,
)
from workers.postgres.retention import apply_retention
from workers.report import command as report_command
from workers.settings import ENV_PREFIX, Settings

log = logging.getLogger("feedbackflow")
Command = TypeVar("Command", bound=Callable[..., Any])
Decorator = Callable[[Command], Command]


async def _migrate(settings: Settings) -> int:
    applied = await migrated(settings)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing (up to date)"
    print(f"migrate: applied {names}")
    return 0


async def _retention(settings: Settings, registry: MetricRegistry) -> int:
    conn = await connect_postgres(settings)
    try:
        result = await apply_retention(conn, settings.pipeline.retention, SystemClock().now())
    finally:
        await conn.close()
    print(
        f"retention: expired {result.expired} pending feedback; dropped "
        f"{len(result.dropped)} partitions {result.dropped}"
    )
    return 0


async def _read_model_rebuild(settings: Settings) -> int:
    from workers.read_model.rebuild import rebuild

    conn = await connect_postgres(settings)
    try:
        counts = await rebuild(conn)
    finally:
        await conn.close()
    print("read-model rebuild: " + ", ".join(f"{t} {n} rows" for t, n in counts.items()))
    return 0


async def _keys(settings: Settings, action: str, **given: str) -> int:
    from workers.postgres import api_keys

    conn = await connect_postgres(settings)
    try:
        if action == "create":
            key = await api_keys.create_key(conn, given["name"], given["scopes"].split(","))
            print(key)
            print(
                "This is the only time the key is shown; the gateway keeps only its hash.",
                file=sys.stderr,
            )
            return 0
        if action == "revoke":
            key_id = api_keys.key_id_of(given["key_id"])
            if await api_keys.revoke_key(conn, key_id):
                print(f"revoked {key_id}; the gateway refuses it within seconds")
                return 0
            print(f"feedbackflow: no active key {key_id!r}", file=sys.stderr)
            return 1
        for listed in await api_keys.list_keys(conn):
            revoked = listed.revoked_at
            state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
            scopes = ",".join(sorted(listed.scopes))
            made = f"{listed.created_at:%Y-%m-%d %H:%M}"
            print(f"{listed.key_id}\t{listed.name}\t{scopes}\t{made}\t{state}")
        return 0
    finally:
        await conn.close()


def _api(
    settings: Settings, registry: MetricRegistry, flags: dict[str, Any], processes: int
) -> int:
    from ingest.gateway.server import run_gateway

    if processes > 1:
        # Each process loads the settings itself: what the flags said goes to the environment.
        given = {
            "FEEDBACKFLOW_KAFKA_BOOTSTRAP": flags.get("kafka_bootstrap"),
            "FEEDBACKFLOW_DATABASE_URL": flags.get("database_url"),
            "FEEDBACKFLOW_CONFIG": str(flags["config"]) if flags.get("config") else None,
            "FEEDBACKFLOW_TOPIC_PREFIX": flags.get("topic_prefix"),
            "FEEDBACKFLOW_GATEWAY__HOST": settings.gateway.host,
            "FEEDBACKFLOW_GATEWAY__PORT": str(settings.gateway.port),
        }
        os.environ.update({name: value for name, value in given.items() if value is not None})
    run_gateway(settings, registry, processes=processes)
    return 0


def _worker(settings: Settings, registry: MetricRegistry) -> int:
    from workers.host.app import run_worker_process

    # Servers, schema and broker features first: a one-line failure with its exit code here,
    # not a traceback from inside the running worker.
    asyncio.run(worker_preflight(settings))
    run_worker_process(settings, registry)
    return 0


async def _topics(settings: Settings, check: bool) -> int:
    from ingest.topics import TopicNames, create_topics, topic_problems

    topics = TopicNames(settings.topic_prefix)
    await check_kafka(settings)
    if not check:
        created = await create_topics(settings, topics)
        kafka = settings.kafka
        print(
            f"topics: created {', '.join(created) or 'nothing (all exist)'}"
            f" ({kafka.partitions} partitions, replication factor {kafka.replication_factor})"
        )
    problems = await topic_problems(settings, topics)
    for problem in problems:
        print(f"topics: {problem}", file=sys.stderr)
    if not problems:
        print(f"topics: {', '.join(topics.all)} exist; inputs co-partitioned")
    return 1 if problems else 0


DESCRIPTION = """\
Join delayed feedback to ML/LLM predictions: Kafka in, windowed join, PostgreSQL out.

Settings: a flag, else a FEEDBACKFLOW_* environment variable, else the config file's
[pipeline] table, else the default.  Kafka TLS and SASL: FEEDBACKFLOW_KAFKA__* (README).
"""

EPILOG = """\
\b
exit codes: 0 ok; 1 the command's own failure (a check that found problems, a mismatch);
2 bad flags, settings or metric config; 3 PostgreSQL does not answer; 4 the database does not
exist; 5 PostgreSQL refused the login; 6 the schema lacks migrations (run feedbackflow migrate);
7 Kafka does not answer; 8 Kafka lacks a feature a setting requires; 9 the gateway cannot
listen on its host and port.
"""


def setting(name: str, *flags: str, what: str, **click_options: Any) -> Decorator[Any]:
    """An option for the setting ``name``: its help names the environment variable and the
    settings object's default, and an absent flag leaves the setting to the environment."""
    default = Settings.model_fields[name].default
    shown = default.value if hasattr(default, "value") else default
    env = f"{ENV_PREFIX}{name.upper()}"
    return click.option(
        *flags, name, default=None, help=f"{what} (env {env}; default: {shown})", **click_options
    )


def _all(*decorators: Decorator[Any]) -> Decorator[Any]:
    def apply(command: Command) -> Command:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


LOGS = _all(
    setting("log_format", "--log-format", what="log lines", type=click.Choice(["text", "json"])),
    setting(
        "log_level",
        "--log-level",
        what="least severe level logged",
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    ),
)
DATABASE = setting("database_url", "--database-url", what="PostgreSQL URL (TLS: ?sslmode=)")
KAFKA = _all(
    setting("kafka_bootstrap", "--kafka-bootstrap", what="Kafka bootstrap servers"),
    setting(
        "topic_prefix",
        "--topic-prefix",
        what="topics are PREFIX.predictions, .feedback, .dead-letter",
    ),
)
CONFIG = setting(
    "config",
    "--config",
    what="metric config ([metrics.*], [pipeline])",
    type=click.Path(path_type=Path),
)
# What the running processes read: the database, the broker and the metric config.
COMMON = _all(DATABASE, KAFKA, CONFIG, LOGS)
_SETTINGS = frozenset(Settings.model_fields)


def _settings(ctx: click.Context, /, given: dict[str, Any]) -> Settings:
    """The settings, from the flags given to the command (and, for the log flags, to the
    group before it: they may stand before or after the command's name)."""
    flags = {**ctx.obj, **{k: v for k, v in given.items() if v is not None}}
    settings = Settings.load(**{k: v for k, v in flags.items() if k in _SETTINGS})
    setup_logging(settings.log_format, settings.log_level)
    return settings


def _with_registry(ctx: click.Context, /, given: dict[str, Any]) -> tuple[Settings, MetricRegistry]:
    settings = _settings(ctx, given)
    return settings, load_registry(settings.config)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(help=DESCRIPTION, epilog=EPILOG, context_settings=CONTEXT)
@click.version_option(
    None,
    "--version",
    package_name="feedbackflow",
    prog_name="feedbackflow",
    message="%(prog)s %(version)s",
)
@LOGS
@click.pass_context
def cli(ctx: click.Context, /, **given: Any) -> None:
    ctx.obj = {k: v for k, v in given.items() if v is not None}


@cli.command(help="apply the database migrations (safe to run twice, or at once)")
@DATABASE
@LOGS
@click.pass_context
def migrate(ctx: click.Context, /, **given: Any) -> int:
    return asyncio.run(_migrate(_settings(ctx, given)))


@cli.command(help="run the stream worker: Kafka -> windowed join -> PostgreSQL")
@COMMON
@setting("consumer_group", "--group", what="consumer group")
@setting("http_port", "--http-port", what="/metrics, /health and /ready", type=int)
@click.pass_context
def worker(ctx: click.Context, /, **given: Any) -> int:
    return _worker(*_with_registry(ctx, given))


@cli.command(help="run the HTTP gateway (FastAPI)")
@COMMON
@click.option("--host", help="env FEEDBACKFLOW_GATEWAY__HOST (default: 127.0.0.1)")
@click.option("--port", type=int, help="env FEEDBACKFLOW_GATEWAY__PORT (default: 8080)")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="gateway processes sharing the port",
)
@click.pass_context
def api(
    ctx: click.Context, /, host: str | None, port: int | None, processes: int, **given: Any
) -> int:
    settings, registry = _with_registry(ctx, given)
    gateway = settings.gateway.model_copy(
        update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
    )
    return _api(settings.model_copy(update={"gateway": gateway}), registry, given, processes)


@cli.group(help="the gateway's API keys")
@DATABASE
@LOGS
@click.pass_context
def keys(ctx: click.Context, /, **given: Any) -> None:
    ctx.obj = {**ctx.obj, **{k: v for k, v in given.items() if v is not None}}


@keys.command("create", help="make a key and print it (once)")
@click.option("--name", required=True, help="who uses it, e.g. checkout-service")
@click.option(
    "--scopes",
    default="feedback",
    show_default=True,
    help="comma-separated: predictions, feedback, admin",
)
@click.pass_context
def keys_create(ctx: click.Context, /, name: str, scopes: str) -> int:
    return asyncio.run(_keys(_settings(ctx, {}), "create", name=name, scopes=scopes))


@keys.command("list", help="every key: id, name, scopes, created, state")
@click.pass_context
def keys_list(ctx: click.Context, /) -> int:
    return asyncio.run(_keys(_settings(ctx, {}), "list"))


@keys.command("revoke", help="stop a key working (within seconds)")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, /, key_id: str) -> int:
    return asyncio.run(_keys(_settings(ctx, {}), "revoke", key_id=key_id))


@cli.command(
    help="create the topics (partitions, replication factor: FEEDBACKFLOW_KAFKA__PARTITIONS, "
    "__REPLICATION_FACTOR) or check them"
)
@KAFKA
@LOGS
@click.option("--check", is_flag=True, help="create nothing; exit 1 if a topic is missing")
@click.pass_context
def topics(ctx: click.Context, /, check: bool, **given: Any) -> int:
    return asyncio.run(_topics(_settings(ctx, given), check))


@cli.command(help="expire pending feedback and drop day partitions past retention")
@DATABASE
@CONFIG
@LOGS
@click.pass_context
def retention(ctx: click.Context, /, **given: Any) -> int:
    return asyncio.run(_retention(*_with_registry(ctx, given)))


@cli.group("read-model", help="the rollups the dashboards and the report read")
def read_model() -> None:
    pass


@read_model.command(
    "rebuild", help="recompute every rollup from feedback and predictions (windows wait)"
)
@DATABASE
@LOGS
@click.pass_context
def read_model_rebuild(ctx: click.Context, /, **given: Any) -> int:
    return asyncio.run(_read_model_rebuild(_settings(ctx, given)))


@cli.command(help=backfill_command.HELP)
@COMMON
@backfill_command.options
@click.pass_context
def backfill(ctx: click.Context, /, **given: Any) -> int:
    settings, registry = _with_registry(ctx, given)
    return backfill_command.run(settings, registry, argparse.Namespace(**given))


@cli.command(help=export_command.HELP)
@COMMON
@export_command.options
@click.pass_context
def export(ctx: click.Context, /, **given: Any) -> int:
    settings, registry = _with_registry(ctx, given)
    return export_command.run(settings, registry, argparse.Namespace(**given))


@cli.command(help=report_command.HELP)
@DATABASE
@LOGS
@report_command.options
@click.pass_context
def report(ctx: click.Context, /, **given: Any) -> int:
    return report_command.run(_settings(ctx, given), given)


@cli.command(help="embedded broker + PostgreSQL, migrate, run a worker and gateway")
@COMMON
@click.option(
    "--http-port",
    "dev_http_port",
    type=int,
    default=8000,
    show_default=True,
    help="worker's /metrics",
)
@click.pass_context
def dev(ctx: click.Context, /, dev_http_port: int, **given: Any) -> int:
    from workers.devstack.dev import run_dev

    return run_dev(_settings(ctx, given), dev_http_port)


@cli.command(help="the haiku demo on the embedded stack; exits 0 if all adds up")
@COMMON
@click.option(
    "--predictions", type=int, default=3000, show_default=True, help="predictions to send"
)
@click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(".feedbackflow/demo-report.png"),
    show_default=True,
    help="where to draw the report of what landed",
)
@click.pass_context
def demo(ctx: click.Context, /, predictions: int, report: Path, **given: Any) -> int:
    from workers.devstack.demo import run_demo

    return run_demo(_settings(ctx, given), predictions, report)


@cli.command(help="write the wire-format JSON Schema files")
@click.option("--check", is_flag=True, help="fail if the files are stale")
def schemas(check: bool) -> int:
    from ingest.wire.json_schema import write_schemas

    return write_schemas(check=check)


@cli.command(help="write the Grafana dashboards and Prometheus alert rules (deploy/)")
@click.option("--check", is_flag=True, help="fail if the files are stale")
def dashboards(check: bool) -> int:
    from workers.dashboards.build import write_dashboards

    return write_dashboards(check=check)


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    try:
        result = cli.main(args=argv, prog_name="feedbackflow", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        print("feedbackflow: interrupted", file=sys.stderr)
        return 130
    except StartupFailure as exc:
        print(f"feedbackflow: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"feedbackflow: config error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except ValueError as exc:  # pydantic's ValidationError of Settings, bad flags
        print(f"feedbackflow: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
