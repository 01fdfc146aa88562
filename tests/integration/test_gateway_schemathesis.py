"""schemathesis, from the gateway's own /openapi.json, finds no 5xx, no undocumented status and
no undocumented content type: bad input of every shape it can think of is a 4xx that says why."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.integration.gateway import new_key, running_gateway, with_gateway
from tests.integration.harness import isolated_settings, make_topics, metric_registry
from workers.devstack.servers import TansuBroker

# Examples per operation and phase: enough to reach every refusal path of the six operations
# (an empty batch with an Idempotency-Key was a 500 it found), in about half a minute.
EXAMPLES = 40
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"


async def test_schemathesis_finds_no_server_error(
    kafka: TansuBroker, database_url: str, tmp_path: Path
) -> None:
    settings = with_gateway(isolated_settings(kafka.bootstrap, database_url))
    await make_topics(settings)
    key = await new_key(database_url, "admin")
    async with running_gateway(settings, metric_registry()) as url:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "20261202",
            "--header",
            f"Authorization: Bearer {key}",
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its cache of found crashes stays out of the repository
        )
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
    assert "passed" in text
