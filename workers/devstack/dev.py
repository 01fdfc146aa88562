"""``feedbackflow dev``: the embedded stack and one worker, for a developer's own producers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ingest.metrics.registry import load_registry, registry_from_mapping
from ingest.topics import TopicNames
from workers.devstack.haiku_traffic import DEMO_METRICS, DEMO_PIPELINE
from workers.devstack.stack import embedded_stack, given, migrate_database
from workers.host.app import run_worker_process
from workers.settings import PipelineSettings, Settings


def run_dev(settings: Settings, http_port: int) -> int:
    registry = registry_from_mapping(DEMO_METRICS)
    if given("config", settings) or settings.config.is_file():
        registry = load_registry(settings.config)  # and its [pipeline], read by the settings
    elif "pipeline" not in settings.model_fields_set:
        settings = settings.model_copy(update={"pipeline": PipelineSettings(**DEMO_PIPELINE)})
    pgdata = Path.cwd() / ".feedbackflow" / "pgdata"
    with embedded_stack(settings, None, pgdata) as live:
        live = live.model_copy(update={"http_port": http_port})
        asyncio.run(migrate_database(live.database_url))
        print(
            "feedbackflow dev is running. Connect with:\n"
            f"  FEEDBACKFLOW_KAFKA_BOOTSTRAP={live.kafka_bootstrap}\n"
            f"  FEEDBACKFLOW_DATABASE_URL='{live.database_url}'\n"
            f"  FEEDBACKFLOW_KAFKA_IDEMPOTENCE={str(live.kafka_idempotence).lower()}\n"
            f"  metrics: http://127.0.0.1:{http_port}/metrics  health: /health\n"
            f"  topics: {', '.join(TopicNames(live.topic_prefix).inputs)}\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        run_worker_process(live, registry)
    return 0
