"""(4) The feedbackflow worker end to end, as the operator runs it: ``python -m workers.cli
worker`` in its own process, Kafka in, joined rows committed in Postgres out.

Throughput is timed from the worker's first decoded event (the earliest ``ingested_at`` it wrote)
to the moment its ``/metrics`` report every prediction written and every feedback joined --
counters the pipeline bumps only after the window's transaction *and* the offset commit.  Start-up
(migrations, tansu's slow first JoinGroup) is outside that interval.

Peak RSS is the kernel's high-water mark (``VmHWM``) of the worker and any children.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.ceilings import Throughput, ensure_days, recent_days
from ingest.topics import TopicNames, create_topics
from workers.devstack.servers import free_port
from workers.testing import traffic as data


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    http_port: int

    @classmethod
    def start(
        cls,
        bootstrap: str,
        database_url: str,
        topics: TopicNames,
        config: Path,
        log: Path,
    ) -> WorkerProcess:
        port = free_port()
        env = {
            **os.environ,
            "FEEDBACKFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "FEEDBACKFLOW_DATABASE_URL": database_url,
            "FEEDBACKFLOW_CONFIG": str(config),
            "FEEDBACKFLOW_TOPIC_PREFIX": topics.prefix,
            "FEEDBACKFLOW_CONSUMER_GROUP": f"ffbench-{uuid.uuid4().hex[:8]}",
            "FEEDBACKFLOW_HTTP_PORT": str(port),
            "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
        }
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "worker"],
                env=env,
                stdout=out,
                stderr=out,
            )
        return cls(process, port)

    def metrics(self) -> dict[str, float]:
        """The worker's Prometheus samples, ``name{labels}`` -> value (empty if not up yet)."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                text = response.read().decode()
        except OSError:
            return {}
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def peak_rss_mb(self) -> float:
        """VmHWM of the worker plus its children (it has none today; a future one counts)."""
        pids = [self.process.pid, *_children(self.process.pid)]
        total_kb = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
            except OSError:
                continue
        return total_kb / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def check_alive(self, log: Path) -> None:
        if self.process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"worker exited with {self.process.returncode}:\n{tail}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found += [int(entry.name), *_children(int(entry.name))]
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _broker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.joinpath("comm").read_text().startswith("tansu"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds the worker, its Postgres backends and the broker spent between ``start`` and
    ``stop``: where the two cores go (the run's throughput is bounded by their sum)."""

    def __init__(self, worker_pid: int, conn: asyncpg.Connection) -> None:
        self.worker_pid = worker_pid
        self.conn = conn
        self.started: dict[str, dict[int, float]] | None = None

    async def _snapshot(self) -> dict[str, dict[int, float]]:
        backends = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {
            "worker": {p: _cpu_seconds(p) for p in [self.worker_pid, *_children(self.worker_pid)]},
            "postgres": {r["pid"]: _cpu_seconds(r["pid"]) for r in backends},
            "broker": {p: _cpu_seconds(p) for p in _broker_pids()},
        }

    async def start(self) -> None:
        self.started = await self._snapshot()

    async def stop(self) -> dict[str, float]:
        if self.started is None:
            return {}
        ended = await self._snapshot()
        return {
            who: sum(cpu - self.started[who].get(pid, 0.0) for pid, cpu in pids.items())
            for who, pids in ended.items()
        }


def _consumed(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("feedbackflow_events_consumed_total"))


def _joined(samples: dict[str, float]) -> float:
    return sum(
        v
        for k, v in samples.items()
        if k.startswith("feedbackflow_feedback_resolved_total") and 'status="joined"' in k
    )


@dataclass(frozen=True)
class EndToEnd:
    label: str
    max_window_events: int
    pending_before: int
    throughput: Throughput
    peak_rss_mb: float
    windows: int
    window_write_seconds: float
    cpu_seconds: dict[str, float]
    feedback_queued: int = 0  # written pending, resolved later from the queue


async def load_pending(database_url: str, count: int) -> None:
    """``count`` pending feedback rows (targets never seen), spread over the last 89 days, as
    they accumulate in production; inserted server-side, which is the fastest way to get them."""
    conn = await asyncpg.connect(database_url)
    try:
        await ensure_days(conn, ("predictions", "feedback"), recent_days(back=90))
        await conn.execute(
            """
            INSERT INTO feedbackflow.feedback (feedback_id, join_key, ts, metric, metric_type,
                target_kind, target_prediction_id, target_id_time, value_bool, source_type,
                tags, metadata, ingested_at)
            SELECT gen_random_uuid(), g.target::text, g.t, 'haiku_rating', 'boolean',
                'prediction_id', g.target, g.t - interval '1 hour', true, 'end_user',
                '{}'::jsonb, '{}'::jsonb, g.t
            FROM (SELECT gen_random_uuid() AS target,
                         now() - (0.5 + random() * 88.5) * interval '1 day' AS t
                  FROM generate_series(1, $1)) g
            """,
            count,
        )
        # Pending feedback also waits in the queue the worker looks it up in.
        await conn.execute(
            """
            INSERT INTO feedbackflow.pending_feedback (feedback_id, join_key, ts,
                target_prediction_id, target_id_time)
            SELECT feedback_id, join_key, ts, target_prediction_id, target_id_time
            FROM feedbackflow.feedback WHERE status = 'pending'
            """
        )
        await conn.execute("ANALYZE feedbackflow.feedback")
        await conn.execute("ANALYZE feedbackflow.pending_feedback")
    finally:
        await conn.close()


async def run_end_to_end(
    label: str,
    bootstrap: str,
    database_url: str,
    topics: TopicNames,
    events: data.EventSet,
    workdir: Path,
    max_window_events: int = 50_000,
    pending_before: int = 0,
    limit_seconds: float = 300.0,
    windows_in_flight: int = 2,
) -> EndToEnd:
    """Run a worker over the already-produced topics until every row is joined in Postgres."""
    config = workdir / f"{label}.toml"
    config.write_text(data.config_toml("1s", max_window_events, windows_in_flight))
    log = workdir / f"worker-{label}.log"
    since = datetime.now(UTC)
    worker = WorkerProcess.start(bootstrap, database_url, topics, config, log)
    meter = CpuMeter(worker.process.pid, await asyncpg.connect(database_url))
    try:
        deadline = time.monotonic() + limit_seconds
        samples: dict[str, float] = {}
        while True:
            worker.check_alive(log)
            samples = await asyncio.to_thread(worker.metrics)
            if meter.started is None and _consumed(samples):
                await meter.start()
            written = samples.get("feedbackflow_predictions_written_total", 0.0)
            if written >= events.predictions and _joined(samples) >= events.feedback:
                done_at = time.time()
                cpu = await meter.stop()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: worker not done after {limit_seconds}s ({samples})")
            await asyncio.sleep(0.05)
        rss = worker.peak_rss_mb()
    finally:
        worker.stop()
        await meter.conn.close()
    conn = await asyncpg.connect(database_url)
    try:
        # The worker's first decode: the earliest ingested_at it wrote (preloaded rows are older).
        first = await conn.fetchval(
            "SELECT least((SELECT min(ingested_at) FROM feedbackflow.predictions"
            "              WHERE ingested_at >= $1),"
            "             (SELECT min(ingested_at) FROM feedbackflow.feedback"
            "              WHERE ingested_at >= $1))",
            since,
        )
        stored = await conn.fetchval("SELECT count(*) FROM feedbackflow.predictions")
        joined = await conn.fetchval(
            "SELECT count(*) FROM feedbackflow.feedback"
            " WHERE status = 'joined' AND ingested_at >= $1",
            since,
        )
    finally:
        await conn.close()
    if stored != events.predictions or joined != events.feedback:
        raise RuntimeError(f"{label}: Postgres holds {stored} predictions, {joined} joined")
    return EndToEnd(
        label=label,
        max_window_events=max_window_events,
        pending_before=pending_before,
        throughput=Throughput(events.events, done_at - first.timestamp()),
        peak_rss_mb=rss,
        windows=int(samples.get('feedbackflow_windows_total{outcome="written"}', 0)),
        window_write_seconds=samples.get("feedbackflow_window_write_seconds_sum", 0.0),
        cpu_seconds=cpu,
        feedback_queued=int(samples.get("feedbackflow_feedback_queued_total", 0.0)),
    )


@dataclass(frozen=True)
class Latency:
    rate: float
    seconds: float
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float


async def run_latency(
    bootstrap: str,
    database_url: str,
    workdir: Path,
    rate: int = 3_000,
    seconds: float = 20.0,
    sample_every: int = 10,
) -> Latency:
    """Produce at a steady ``rate`` with a 1 s window; time produce -> row visible in Postgres.

    Every ``sample_every``-th event (prediction or feedback) is timed from just before its
    ``send`` to the first 50 ms poll that sees its row.
    """
    topics = TopicNames(f"ffbench{uuid.uuid4().hex[:8]}lat")
    await create_topics(bootstrap, topics, partitions=data.PARTITIONS)
    config = workdir / "latency.toml"
    config.write_text(data.config_toml("1s", 50_000))
    log = workdir / "worker-latency.log"
    events = data.generate(int(rate * seconds), seed=11, spread=max(1, rate // 2))
    worker = WorkerProcess.start(bootstrap, database_url, topics, config, log)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=5
    )
    await producer.start()
    conn = await asyncpg.connect(database_url)
    try:
        # Warm up until the worker is in its group and writing: one prediction visible.
        warm = data.generate(1, seed=3)
        warm_id = uuid.UUID(warm.messages[0].key.decode())
        while not await conn.fetchval(
            "SELECT count(*) FROM feedbackflow.predictions WHERE prediction_id = $1", warm_id
        ):
            worker.check_alive(log)
            await producer.send(
                topics.predictions, warm.messages[0].value, key=warm.messages[0].key
            )
            await asyncio.sleep(1.0)
        sent: dict[tuple[bool, uuid.UUID], float] = {}
        seen: dict[tuple[bool, uuid.UUID], float] = {}
        finished = asyncio.Event()

        async def poll() -> None:
            while not (finished.is_set() and len(seen) == len(sent)):
                outstanding = [k for k in sent if k not in seen]
                for is_feedback, table, column in (
                    (False, "predictions", "prediction_id"),
                    (True, "feedback", "feedback_id"),
                ):
                    ids = [i for f, i in outstanding if f == is_feedback]
                    if ids:
                        rows = await conn.fetch(
                            f"SELECT {column} AS id FROM feedbackflow.{table}"
                            f" WHERE {column} = ANY($1::uuid[])",
                            ids,
                        )
                        now = time.time()
                        for row in rows:
                            seen[(is_feedback, row["id"])] = now
                await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll())
        tick = 0.01
        per_tick = rate * tick
        started = time.monotonic()
        budget = 0.0
        index = 0
        while index < len(events.messages):
            budget += per_tick
            while budget >= 1 and index < len(events.messages):
                m = events.messages[index]
                topic = topics.feedback if m.is_feedback else topics.predictions
                if index % sample_every == 0:
                    key = (
                        uuid.UUID(json.loads(m.value)["feedback_id"])
                        if m.is_feedback
                        else uuid.UUID(m.key.decode())
                    )
                    sent[(m.is_feedback, key)] = time.time()
                await producer.send(topic, m.value, key=m.key)
                index += 1
                budget -= 1
            next_tick = started + (index / rate)
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        produced_for = time.monotonic() - started
        finished.set()
        await asyncio.wait_for(poller, timeout=60)
    finally:
        await producer.stop()
        await conn.close()
        worker.stop()
    delays = sorted(1000 * (seen[k] - sent[k]) for k in sent)
    quantiles = statistics.quantiles(delays, n=100, method="inclusive")
    return Latency(
        rate=len(events.messages) / produced_for,
        seconds=produced_for,
        samples=len(delays),
        p50_ms=quantiles[49],
        p99_ms=quantiles[98],
        max_ms=delays[-1],
    )
