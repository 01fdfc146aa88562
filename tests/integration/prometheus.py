"""A real Prometheus (Debian's package, installed by deploy/dev/ensure-prometheus) for the tests
that scrape the worker and the gateway, and its HTTP query API."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.integration.harness import wait_until
from workers.devstack.servers import free_port, wait_for_port

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"
# Scrapes and rule evaluations every second: tests wait on what Prometheus has seen.
INTERVAL = "1s"


def scrape_config(jobs: dict[str, int]) -> dict[str, Any]:
    """Prometheus scraping each job's port on 127.0.0.1 every second."""
    return {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in jobs.items()
        ],
    }


def shipped_config(ports: dict[str, int]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml as shipped (its jobs, its rule files), each job's target
    moved to a port on 127.0.0.1 and the intervals shortened to a second."""
    config: dict[str, Any] = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [str(SHIPPED_CONFIG.parent / f) for f in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    return config


@asynccontextmanager
async def running_prometheus(config: dict[str, Any], directory: Path) -> AsyncIterator[int]:
    """Prometheus with ``config``, its data in ``directory``; yields its port."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs it (deploy/dev/ensure-prometheus)"
    port = free_port()
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    with (directory / "prometheus.log").open("wb") as log:
        process = await asyncio.to_thread(
            subprocess.Popen,
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        await asyncio.to_thread(wait_for_port, port, 30, process)
        # It listens before it serves: queries answer 503 until the storage is open.
        await wait_until(lambda: asyncio.to_thread(_ready, port), 30, "Prometheus to be ready")
        yield port
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def api(port: int, path: str, **params: str) -> Any:
    """The ``data`` of an answer of Prometheus' HTTP API; an error answer raises, naming it."""
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # a refused query answers JSON naming the error
        text = exc.read().decode()
        try:
            body = json.loads(text)
        except ValueError:
            raise AssertionError(f"Prometheus answered {exc.code} to {url}: {text!r}") from None
    if body.get("status") != "success":
        raise AssertionError(f"Prometheus refused {params or path}: {body.get('error')}")
    return body["data"]


def instant(port: int, expression: str) -> list[dict[str, Any]]:
    """The series ``expression`` returns now."""
    result: list[dict[str, Any]] = api(port, "query", query=expression)["result"]
    return result
