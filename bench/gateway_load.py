"""The gateway under load, with the broker, a worker and Postgres running, in one run:

1. the ceiling: the same server's no-op route (reads the body, answers a constant);
2. ``POST /feedback`` (TensorZero's route): auth by API key, validation, the broker's ack;
3. ``POST /v1/batch`` of 100 feedback;
4. the SDK producing the same feedback straight to Kafka (events/s), for (3) to be compared with;
5. ``POST /feedback`` again at half of (2)'s rate, for its latency.

The load generator is ``hey`` (Debian's package) in its own process; the gateway is one process
(``bench.gateway_server``), the worker another.  Rounds interleave (1)-(4), so that a noisy
neighbour weighs on every figure alike; CPU seconds per process say where the time went.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.infra import running_stack
from bench.worker_e2e import _broker_pids, _children, _cpu_seconds
from ingest.metrics.registry import load_registry
from ingest.sdk.producer import FeedbackflowProducer, uuid7
from ingest.topics import TopicNames, create_topics
from workers.devstack.servers import free_port
from workers.postgres.api_keys import create_key

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "feedbackflow.toml"
BATCH = 100
# Connections that send the half-rate load (see _rounds).
HALF_RATE_CONNECTIONS = 8


@dataclass
class Load:
    """What ``hey`` measured: requests per second, latency percentiles, answers by status."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    cpu: dict[str, float]


def _hey(
    url: str, body: Path, key: str, seconds: float, concurrency: int, qps: float | None = None
) -> str:
    command = [
        "hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST",
        "-T", "application/json", "-H", f"Authorization: Bearer {key}", "-D", str(body),
    ]  # fmt: skip
    if qps is not None:
        command += ["-q", f"{qps:.2f}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    return done.stdout


def _parse(output: str) -> tuple[float, float, float, dict[int, int]]:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(p: int) -> float:
        match = re.search(rf"{p}%+ in ([\d.]+) secs", output)
        return 1000 * float(match.group(1)) if match else float("nan")

    statuses = {
        int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)
    }
    return rate, percentile(50), percentile(99), statuses


class Processes:
    """CPU seconds of the gateway, the worker, the broker, Postgres and hey over a load."""

    def __init__(self, gateway: int, worker: int, admin_url: str) -> None:
        self.gateway, self.worker, self.admin_url = gateway, worker, admin_url

    async def snapshot(self) -> dict[str, float]:
        conn = await asyncpg.connect(self.admin_url)
        try:
            backends = [r["pid"] for r in await conn.fetch("SELECT pid FROM pg_stat_activity")]
        finally:
            await conn.close()
        return {
            "gateway": sum(map(_cpu_seconds, [self.gateway, *_children(self.gateway)])),
            "worker": sum(map(_cpu_seconds, [self.worker, *_children(self.worker)])),
            "broker": sum(map(_cpu_seconds, _broker_pids())),
            "postgres": sum(map(_cpu_seconds, backends)),
        }


async def _measure(
    processes: Processes,
    url: str,
    body: Path,
    key: str,
    seconds: float,
    concurrency: int,
    qps: float | None = None,
) -> Load:
    before = await processes.snapshot()
    started = time.monotonic()
    output = await asyncio.to_thread(_hey, url, body, key, seconds, concurrency, qps)
    wall = time.monotonic() - started
    after = await processes.snapshot()
    rate, p50, p99, statuses = _parse(output)
    cpu = {who: (after[who] - before[who]) / wall for who in after}
    return Load(rate, p50, p99, statuses, cpu)


async def _sdk_rate(bootstrap: str, topics: TopicNames, events: int, prediction: str) -> float:
    registry = load_registry(CONFIG)
    async with FeedbackflowProducer(
        bootstrap, topics=topics, registry=registry, idempotent=False
    ) as ff:
        started = time.perf_counter()
        for _ in range(events):
            await ff.log_feedback(metric="haiku_rating", prediction_id=prediction, value=True)
        await ff.flush()
        return events / (time.perf_counter() - started)


def _wait_for(url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - our own
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {within}s")


def _env(bootstrap: str, database_url: str, prefix: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "FEEDBACKFLOW_DATABASE_URL": database_url,
        "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
        "FEEDBACKFLOW_TOPIC_PREFIX": prefix,
        "FEEDBACKFLOW_CONFIG": str(CONFIG),
        "FEEDBACKFLOW_GATEWAY__PORT": str(port),
        "FEEDBACKFLOW_HTTP_PORT": str(free_port()),
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=out)


async def gateway_load(
    rounds: int, seconds: float, concurrency: int, sdk_events: int
) -> dict[str, Any]:
    if shutil.which("hey") is None:
        raise SystemExit("needs hey: apt-get install hey (Debian's package)")
    async with running_stack() as stack:
        database_url = await stack.database("gateway")
        prefix = f"bench-gw-{uuid.uuid4().hex[:6]}"
        topics = TopicNames(prefix)
        await create_topics(stack.bootstrap, topics, partitions=2)
        conn = await asyncpg.connect(database_url)
        try:
            key = await create_key(conn, "bench", ["predictions", "feedback"])
        finally:
            await conn.close()
        port = free_port()
        env = _env(stack.bootstrap, database_url, prefix, port)
        logs = Path(tempfile.mkdtemp(prefix="ffbench-gw-"))
        gateway = _start(["-m", "bench.gateway_server"], env, logs / "gateway.log")
        worker = _start(["-m", "workers.cli", "worker"], env, logs / "worker.log")
        try:
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(_wait_for, f"{base}/health")
            return await _rounds(
                Processes(gateway.pid, worker.pid, stack.admin_url),
                base,
                key,
                stack.bootstrap,
                topics,
                rounds=rounds,
                seconds=seconds,
                concurrency=concurrency,
                sdk_events=sdk_events,
                bodies=logs,
            )
        finally:
            for process in (gateway, worker):
                process.terminate()
                process.wait(timeout=30)


async def _rounds(
    processes: Processes,
    base: str,
    key: str,
    bootstrap: str,
    topics: TopicNames,
    *,
    rounds: int,
    seconds: float,
    concurrency: int,
    sdk_events: int,
    bodies: Path,
) -> dict[str, Any]:
    prediction = str(uuid7())
    feedback_body = bodies / "feedback.json"
    feedback_body.write_text(
        json.dumps(
            {
                "metric_name": "haiku_rating",
                "inference_id": prediction,
                "value": True,
                "episode_id": None,
                "internal": False,
                "tags": {"user": "u-1"},
                "dryrun": False,
            }
        )
    )
    batch_body = bodies / "batch.json"
    one = {"metric": "haiku_rating", "prediction_id": prediction, "value": True}
    batch_body.write_text(json.dumps({"feedback": [one] * BATCH}))
    runs: dict[str, list[Load]] = {"noop": [], "feedback": [], "batch": []}
    sdk: list[float] = []
    for n in range(rounds):
        print(f"  round {n + 1}/{rounds}", flush=True)
        for name, path, body in (
            ("noop", "/noop", feedback_body),
            ("feedback", "/feedback", feedback_body),
            ("batch", "/v1/batch", batch_body),
        ):
            load = await _measure(processes, base + path, body, key, seconds, concurrency)
            runs[name].append(load)
            print(
                f"    {name:8s} {load.requests_per_second:8.0f} req/s  p99 {load.p99_ms:6.1f} ms"
                f"  {load.statuses}",
                flush=True,
            )
        sdk.append(await _sdk_rate(bootstrap, topics, sdk_events, prediction))
        print(f"    sdk      {sdk[-1]:8.0f} events/s", flush=True)
    peak = statistics.median(r.requests_per_second for r in runs["feedback"])
    # At half the peak rate, from few connections and from many: hey paces each connection on
    # its own ticker, and the tickers fire together, so 32 connections send bursts of 32.
    half: dict[int, Load] = {}
    for connections in (HALF_RATE_CONNECTIONS, concurrency):
        half[connections] = await _measure(
            processes, base + "/feedback", feedback_body, key, seconds * 2, connections,
            qps=peak / 2 / connections,
        )  # fmt: skip
        print(
            f"    at half  {half[connections].requests_per_second:8.0f} req/s from "
            f"{connections} connections  p99 {half[connections].p99_ms:6.1f} ms",
            flush=True,
        )

    def summary(loads: list[Load]) -> dict[str, Any]:
        return {
            "requests_per_second": [r.requests_per_second for r in loads],
            "median": statistics.median(r.requests_per_second for r in loads),
            "p50_ms": statistics.median(r.p50_ms for r in loads),
            "p99_ms": statistics.median(r.p99_ms for r in loads),
            "statuses": [r.statuses for r in loads],
            "cpu_cores": {
                who: statistics.median(r.cpu[who] for r in loads) for who in loads[0].cpu
            },
        }

    return {
        "rounds": rounds,
        "seconds": seconds,
        "concurrency": concurrency,
        "batch": BATCH,
        "noop": summary(runs["noop"]),
        "feedback": summary(runs["feedback"]),
        "v1_batch": summary(runs["batch"]),
        "sdk_events_per_second": sdk,
        "sdk_median": statistics.median(sdk),
        "half_rate": [
            {
                "connections": connections,
                "target_rps": peak / 2,
                "requests_per_second": load.requests_per_second,
                "p50_ms": load.p50_ms,
                "p99_ms": load.p99_ms,
                "statuses": load.statuses,
                "cpu_cores": load.cpu,
            }
            for connections, load in half.items()
        ],
    }
