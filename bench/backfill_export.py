"""``python -m bench.backfill_export [--rows N]``: backfill and export against their ceilings, in
one run on one event set.

(a) the COPY ceiling (``bench.ceilings.write_ceiling``) of the set's decoded rows;
(b) ``feedbackflow backfill --direct`` of the same rows from Parquet files;
(c) the SDK's own produce rate (``workers.testing.traffic.produce``) of the set;
(d) ``feedbackflow backfill`` of the Parquet files through Kafka;
(e) ``feedbackflow export`` of what (b) stored, to Parquet and to JSONL.
Each command runs as its own process, whose peak RSS is read from ``wait4``.  Prints a markdown
table for docs/performance.md; writes nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.ceilings import write_ceiling
from bench.infra import running_stack
from ingest.topics import TopicNames, create_topics
from workers.testing import traffic as data


@dataclass(frozen=True)
class Run:
    what: str
    rows: int
    seconds: float
    peak_rss_mb: float | None = None

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def write_parquet(events: data.EventSet, folder: Path) -> list[Path]:
    """The set's events as three Parquet files: predictions, boolean ratings, float stars (a
    Parquet column has one type, so one file per value type)."""
    kinds: dict[str, list[dict[str, Any]]] = {"predictions": [], "ratings": [], "stars": []}
    for message in events.messages:
        body = json.loads(message.value)
        if not message.is_feedback:
            kinds["predictions"].append(body)
        else:
            kinds["ratings" if body["metric"] == "haiku_rating" else "stars"].append(body)
    paths = []
    for name, rows in kinds.items():
        path = folder / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100_000)
        paths.append(path)
    return paths


def run_command(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of a command run to its end.  The peak is the process's own
    VmHWM, read until it exits (``wait4``'s figure would count the forked copy of this process
    before its exec)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    peak_kb = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[3:5]} exited {process.returncode}")
    return seconds, peak_kb / 1024


async def bench(rows: int) -> list[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="ffbench-backfill-"))
    _say(f"generating {rows:,} events")
    events = data.generate(rows)
    files = write_parquet(events, workdir)
    config = workdir / "feedbackflow.toml"
    config.write_text(data.config_toml())
    runs = []
    async with running_stack() as stack:
        topics = TopicNames(f"ffbench{uuid.uuid4().hex[:8]}")
        decoded = data.decode(events.messages, topics, data.registry())
        copy = await write_ceiling(await stack.database("copy"), decoded)
        del decoded
        runs.append(Run("(a) ceiling: asyncpg COPY of the decoded rows", rows, copy.seconds))
        _say(f"{runs[-1].what}: {runs[-1].per_second:,.0f} rows/s")

        direct_db = await stack.database("direct")
        env = {
            **os.environ,
            "FEEDBACKFLOW_CONFIG": str(config),
            "FEEDBACKFLOW_DATABASE_URL": direct_db,
            "FEEDBACKFLOW_KAFKA_BOOTSTRAP": stack.bootstrap,
            "FEEDBACKFLOW_KAFKA_IDEMPOTENCE": "false",
            "FEEDBACKFLOW_TOPIC_PREFIX": topics.prefix,
        }
        cli = [sys.executable, "-m", "workers.cli"]
        backfill = [*cli, "backfill", "--no-progress", "--batch-rows", "20000"]
        seconds, rss = run_command([*backfill, "--direct", *map(str, files)], env)
        runs.append(Run("(b) backfill --direct from Parquet", rows, seconds, rss))
        _say(f"{runs[-1].what}: {runs[-1].per_second:,.0f} rows/s, {rss:.0f} MB")

        produce_seconds = await data.produce(
            stack.bootstrap, TopicNames(f"{topics.prefix}p"), events
        )
        runs.append(
            Run("(c) ceiling: the SDK's producer (aiokafka, acks=all)", rows, produce_seconds)
        )
        _say(f"{runs[-1].what}: {runs[-1].per_second:,.0f} rows/s")

        await create_topics(stack.bootstrap, topics, partitions=data.PARTITIONS)
        seconds, rss = run_command([*backfill, *map(str, files)], env)
        runs.append(Run("(d) backfill through Kafka from Parquet", rows, seconds, rss))
        _say(f"{runs[-1].what}: {runs[-1].per_second:,.0f} rows/s, {rss:.0f} MB")

        exported = _feedback_rows(events)
        for fmt in ("parquet", "jsonl"):
            out = workdir / f"export.{fmt}"
            seconds, rss = run_command([*cli, "export", "-o", str(out)], env)
            runs.append(Run(f"(e) export of the joined feedback to {fmt}", exported, seconds, rss))
            _say(f"{runs[-1].what}: {runs[-1].per_second:,.0f} rows/s, {rss:.0f} MB")
    return runs


def _feedback_rows(events: data.EventSet) -> int:
    return events.feedback


def table(runs: list[Run]) -> str:
    lines = ["| what | rows | seconds | rows/s | peak RSS |", "|---|---:|---:|---:|---:|"]
    for run in runs:
        rss = "" if run.peak_rss_mb is None else f"{run.peak_rss_mb:.0f} MB"
        lines.append(
            f"| {run.what} | {run.rows:,} | {run.seconds:.1f} | {run.per_second:,.0f} | {rss} |"
        )
    by = {run.what[:3]: run for run in runs}
    lines += [
        "",
        f"(b) / (a): {by['(b)'].per_second / by['(a)'].per_second:.2f}; "
        f"(d) / (c): {by['(d)'].per_second / by['(c)'].per_second:.2f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(table(asyncio.run(bench(args.rows))))


if __name__ == "__main__":
    main()
