"""``feedbackflow``: migrate, worker, api, keys, topics, retention, backfill, export, dev, demo,
schemas, dashboards.

Connection settings come from flags, then ``FEEDBACKFLOW_*`` environment variables, then
defaults (``workers.settings``); the metric config from ``--config`` / ``FEEDBACKFLOW_CONFIG``.
A command that cannot start says why in one line and exits with a code that says it
(``workers.host.startup.ExitCode``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
from workers.settings import ENV_PREFIX, Settings

log = logging.getLogger("feedbackflow")


def _settings_from(args: argparse.Namespace, **overrides: object) -> Settings:
    flags = {
        "kafka_bootstrap": getattr(args, "kafka_bootstrap", None),
        "database_url": getattr(args, "database_url", None),
        "config": getattr(args, "config", None),
        "topic_prefix": getattr(args, "topic_prefix", None),
        "consumer_group": getattr(args, "group", None),
        "http_port": getattr(args, "http_port", None),
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    flags.update(overrides)
    return Settings.load(**flags)


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


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from workers.postgres import api_keys

    conn = await connect_postgres(settings)
    try:
        if args.keys_command == "create":
            key = await api_keys.create_key(conn, args.name, args.scopes.split(","))
            print(key)
            print(
                "This is the only time the key is shown; the gateway keeps only its hash.",
                file=sys.stderr,
            )
            return 0
        if args.keys_command == "revoke":
            key_id = api_keys.key_id_of(args.key_id)
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


def _api(settings: Settings, registry: MetricRegistry, args: argparse.Namespace) -> int:
    from ingest.gateway.server import run_gateway

    if args.processes > 1:
        # Each process loads the settings itself: what the flags said goes to the environment.
        given = {
            "FEEDBACKFLOW_KAFKA_BOOTSTRAP": args.kafka_bootstrap,
            "FEEDBACKFLOW_DATABASE_URL": args.database_url,
            "FEEDBACKFLOW_CONFIG": str(args.config) if args.config else None,
            "FEEDBACKFLOW_TOPIC_PREFIX": args.topic_prefix,
            "FEEDBACKFLOW_GATEWAY__HOST": args.host,
            "FEEDBACKFLOW_GATEWAY__PORT": None if args.port is None else str(args.port),
        }
        os.environ.update({name: value for name, value in given.items() if value is not None})
    run_gateway(settings, registry, processes=args.processes)
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


def _setting_help(name: str, text: str) -> str:
    """Help that names the environment variable and the default, from the settings object."""
    default = Settings.model_fields[name].default
    return f"{text} (env {ENV_PREFIX}{name.upper()}; default: {default})"


DESCRIPTION = """\
Join delayed feedback to ML/LLM predictions: Kafka in, windowed join, PostgreSQL out.

Settings: a flag, else a FEEDBACKFLOW_* environment variable, else the config file's
[pipeline] table, else the default.  Kafka TLS and SASL: FEEDBACKFLOW_KAFKA__* (README).
"""

EPILOG = """\
exit codes: 0 ok; 1 the command's own failure (a check that found problems, a mismatch);
2 bad flags, settings or metric config; 3 PostgreSQL does not answer; 4 the database does not
exist; 5 PostgreSQL refused the login; 6 the schema lacks migrations (run feedbackflow migrate);
7 Kafka does not answer; 8 Kafka lacks a feature a setting requires; 9 the gateway cannot
listen on its host and port.
"""


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="feedbackflow", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"feedbackflow {_version()}")
    # Before or after the command: the command's parser leaves unset what was not given there.
    logs = argparse.ArgumentParser(add_help=False)
    for where, default in ((parser, None), (logs, argparse.SUPPRESS)):
        where.add_argument(
            "--log-format",
            choices=["text", "json"],
            default=default,
            help=_setting_help("log_format", "log lines"),
        )
        where.add_argument(
            "--log-level",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            default=default,
            help=_setting_help("log_level", "least severe level logged"),
        )
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url", help=_setting_help("database_url", "PostgreSQL URL (TLS: ?sslmode=)")
    )
    kafka = argparse.ArgumentParser(add_help=False)
    kafka.add_argument(
        "--kafka-bootstrap", help=_setting_help("kafka_bootstrap", "Kafka bootstrap servers")
    )
    kafka.add_argument(
        "--topic-prefix",
        help=_setting_help(
            "topic_prefix", "topics are PREFIX.predictions, .feedback, .dead-letter"
        ),
    )
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        type=Path,
        help=_setting_help("config", "metric config ([metrics.*], [pipeline])"),
    )
    # What the running processes read: the database, the broker and the metric config.
    common = argparse.ArgumentParser(add_help=False, parents=[database, kafka, config])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[*parents, logs],
            help=text,
            description=text,
            formatter_class=formatter,
        )

    command("migrate", "apply the database migrations (safe to run twice, or at once)", database)
    worker = command("worker", "run the stream worker: Kafka → windowed join → PostgreSQL", common)
    worker.add_argument("--group", help=_setting_help("consumer_group", "consumer group"))
    worker.add_argument(
        "--http-port", type=int, help=_setting_help("http_port", "/metrics, /health and /ready")
    )
    api = command("api", "run the HTTP gateway (FastAPI)", common)
    api.add_argument("--host", help="env FEEDBACKFLOW_GATEWAY__HOST (default: 127.0.0.1)")
    api.add_argument("--port", type=int, help="env FEEDBACKFLOW_GATEWAY__PORT (default: 8080)")
    api.add_argument(
        "--processes", type=int, default=1, help="gateway processes sharing the port (default: 1)"
    )
    keys = command("keys", "the gateway's API keys", database)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", required=True, help="who uses it, e.g. checkout-service")
    create.add_argument(
        "--scopes",
        default="feedback",
        help="comma-separated: predictions, feedback, admin (default: feedback)",
    )
    keys_sub.add_parser("list", help="every key: id, name, scopes, created, state")
    revoke = keys_sub.add_parser("revoke", help="stop a key working (within seconds)")
    revoke.add_argument("key_id", help="the key's id (or the whole key)")
    topics = command(
        "topics",
        "create the topics (partitions, replication factor: FEEDBACKFLOW_KAFKA__PARTITIONS, "
        "__REPLICATION_FACTOR) or check them",
        kafka,
    )
    topics.add_argument(
        "--check", action="store_true", help="create nothing; exit 1 if a topic is missing"
    )
    command(
        "retention",
        "expire pending feedback and drop day partitions past retention",
        database,
        config,
    )
    dev = command("dev", "embedded broker + PostgreSQL, migrate, run a worker and gateway", common)
    dev.add_argument(
        "--http-port", type=int, default=8000, help="worker's /metrics (default: 8000)"
    )
    demo = command("demo", "the haiku demo on the embedded stack; exits 0 if all adds up", common)
    demo.add_argument(
        "--predictions", type=int, default=3000, help="predictions to send (default: 3000)"
    )
    backfill_command.add_parser(sub, common)
    export_command.add_parser(sub, common)
    schemas = command("schemas", "write the wire-format JSON Schema files")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    dashboards = sub.add_parser(
        "dashboards", help="write the Grafana dashboards and Prometheus alert rules (deploy/)"
    )
    dashboards.add_argument("--check", action="store_true", help="fail if the files are stale")
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("feedbackflow")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except StartupFailure as exc:
        print(f"feedbackflow: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"feedbackflow: config error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except ValueError as exc:  # pydantic's ValidationError of Settings, bad flags
        print(f"feedbackflow: {exc}", file=sys.stderr)
        return ExitCode.CONFIG


def _logging_as_set(settings: Settings) -> Settings:
    setup_logging(settings.log_format, settings.log_level)
    return settings


def _write_files(args: argparse.Namespace) -> int | None:
    """The commands that write (or check) files the repository commits; None for the others."""
    if args.command == "schemas":
        from ingest.wire.json_schema import write_schemas

        return write_schemas(check=args.check)
    if args.command == "dashboards":
        from workers.dashboards.build import write_dashboards

        return write_dashboards(check=args.check)
    return None


def _retention_command(
    settings: Settings, registry: MetricRegistry, _args: argparse.Namespace
) -> int:
    return asyncio.run(_retention(settings, registry))


# Commands over the data, each given the settings, the metric registry and its arguments (the
# backfill's and export's flags and run live in their own modules, which load nothing heavy).
BATCH_COMMANDS = {
    "retention": _retention_command,
    "backfill": backfill_command.run,
    "export": export_command.run,
}


def _dispatch(args: argparse.Namespace) -> int:
    written = _write_files(args)
    if written is not None:
        return written
    if args.command == "demo":
        from workers.devstack.demo import run_demo

        return run_demo(_logging_as_set(_settings_from(args)), args.predictions)
    if args.command == "dev":
        from workers.devstack.dev import run_dev

        return run_dev(_logging_as_set(_settings_from(args)), args.http_port)
    settings = _settings_from(args)
    setup_logging(settings.log_format, settings.log_level)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "keys":
        return asyncio.run(_keys(settings, args))
    if args.command == "topics":
        return asyncio.run(_topics(settings, args.check))
    registry = load_registry(settings.config)
    if args.command in BATCH_COMMANDS:
        return BATCH_COMMANDS[args.command](settings, registry, args)
    if args.command == "api":
        gateway = settings.gateway.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        if args.processes < 1:
            raise ValueError("--processes: at least 1")
        return _api(settings.model_copy(update={"gateway": gateway}), registry, args)
    return _worker(settings, registry)


if __name__ == "__main__":
    raise SystemExit(main())
