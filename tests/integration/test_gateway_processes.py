"""``feedbackflow api`` as users start it: the real command, in its own process tree; with
``--processes 2`` two gateway processes share the port and both publish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.harness import isolated_settings, make_topics, wait_until
from workers.devstack.servers import TansuBroker, free_port

CONFIG = Path(__file__).resolve().parents[2] / "feedbackflow.toml"
# How long the command may take to stop after SIGTERM.
STOP_WITHIN_SECONDS = 30


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = entry.joinpath("stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out)


async def test_two_gateway_processes_share_the_port_and_stop_on_sigterm(
    kafka: TansuBroker, database_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka.bootstrap, database_url)
    await make_topics(settings)
    port = free_port()
    env = {
        **os.environ,
        "FEEDBACKFLOW_GATEWAY__AUTH": "false",
        "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
    }
    command = [
        sys.executable, "-m", "workers.cli", "api", "--processes", "2", "--port", str(port),
        "--kafka-bootstrap", kafka.bootstrap, "--database-url", database_url,
        "--topic-prefix", settings.topic_prefix, "--config", str(CONFIG),
    ]  # fmt: skip
    process = _start(command, env, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, within=60, what="the gateway processes to serve")
            assert len(_children(process.pid)) >= 2, (tmp_path / "api.log").read_text()
            for n in range(20):
                answer = await http.post(
                    "/v1/feedback", json={"metric": "comment", "join_key": f"k{n}", "value": "x"}
                )
                assert answer.status_code == 202, answer.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_WITHIN_SECONDS) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
