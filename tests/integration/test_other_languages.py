"""The wire format is a public contract: a Node.js service (kafkajs 2.2.4 from the npm registry,
installed by deploy/dev/ensure-node-example) produces a prediction and feedback to the real
broker, and the worker joins them in Postgres.  The README shows the same file."""

from __future__ import annotations

import asyncio
import os
import re
import shutil

import asyncpg

from ingest.metrics.registry import load_registry
from tests.integration.harness import count, live_pipeline, wait_for_count
from tests.integration.test_readme_examples import README, REPOSITORY_CONFIG
from workers.devstack.servers import TansuBroker

EXAMPLE = README.parent / "docs" / "examples" / "node" / "produce.mjs"


def test_the_readme_shows_the_node_example_as_it_is() -> None:
    (block,) = re.findall(r"```js\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert block == EXAMPLE.read_text()


async def test_a_node_service_produces_a_prediction_and_feedback_that_land_joined(
    kafka: TansuBroker, database_url: str, db: asyncpg.Connection
) -> None:
    node = shutil.which("node")
    assert node, "node is missing: install Node.js 18+ (Debian: nodejs npm)"
    assert (EXAMPLE.parent / "node_modules" / "kafkajs").is_dir(), (
        "kafkajs is missing: `make test` installs it (deploy/dev/ensure-node-example)"
    )
    registry = load_registry(REPOSITORY_CONFIG)
    async with live_pipeline(kafka.bootstrap, database_url, registry=registry) as live:
        env = {
            **os.environ,
            "FEEDBACKFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "FEEDBACKFLOW_TOPIC_PREFIX": live.settings.topic_prefix,
        }
        process = await asyncio.create_subprocess_exec(
            node,
            str(EXAMPLE),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        join_key = out.decode().strip().splitlines()[-1]
        await wait_for_count(
            db, "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'", 1
        )
    row = await db.fetchrow(
        "SELECT f.join_key, f.value_bool, p.application, p.model FROM feedbackflow.feedback f"
        " JOIN feedbackflow.predictions p ON p.prediction_id = f.prediction_id"
    )
    assert row is not None
    assert tuple(row) == (join_key, True, "recommend_products", "ranker-v3")
    assert await count(db, "SELECT count(*) FROM feedbackflow.dead_letters") == 0
