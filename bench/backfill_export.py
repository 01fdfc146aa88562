"""``python -m bench.backfill_export [--rows N]``: backfill and export against their ceilings, in
one run on one event set.

(a) the COPY ceiling (``bench.ceilings.write_ceiling``) of the set's decoded rows;
(b) ``feedbackflow backfill --direct`` of the same rows from Parquet files;
(c) the SDK's own produce rate (``workers.testing.traffic.produce``) of the set;
(d) ``feedbackflow backfill`` of the Parquet files through Kafka;
(e) ``feedbackflow export`` of what (b) stored, to Parquet and to JSONL.
Each command runs as its own process, whose peak RSS is read from ``wait4``.  Prints a markdown
table for docs/performance.md; writes nothing else.

``--scale N [N ...]``: instead, ``backfill --direct`` alone of one predictions file of N rows
each (written a row group at a time, so this process stays small too): its memory whatever the
file's size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames, create_topics
from workers.testing import traffic as data

BATCH_ROWS = 20_000  # rows a backfill checks and writes at once, in every run here


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
        backfill = [*cli, "backfill", "--no-progress", "--batch-rows", str(BATCH_ROWS)]
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


SCALE_GROUP_ROWS = 100_000


def write_predictions(rows: int, path: Path) -> None:
    """``rows`` predictions of the bench's shape in one Parquet file, a row group at a time,
    ids minted at their own times (100 a millisecond, as ``data.generate`` spaces them)."""
    rng = random.Random(11)
    now_ms = int(time.time() * 1000)
    writer: pq.ParquetWriter | None = None
    try:
        for start in range(0, rows, SCALE_GROUP_ROWS):
            times = [now_ms + i // 100 for i in range(start, min(rows, start + SCALE_GROUP_ROWS))]
            topics = [rng.choice(data.TOPICS) for _ in times]
            table = pa.table(
                {
                    "prediction_id": [str(uuid7(at)) for at in times],
                    "application": ["generate_haiku"] * len(times),
                    "model": [rng.choice(data.MODELS) for _ in times],
                    "inputs": [{"topic": t, "temperature": 0.7} for t in topics],
                    "outputs": [
                        {"haiku": f"{t} at dusk / five seven five syllables / the worker joins it"}
                        for t in topics
                    ],
                    "tags": [{"env": "bench"}] * len(times),
                    "timestamp": times,
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=SCALE_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()


async def scale(sizes: list[int]) -> list[Run]:
    """``backfill --direct`` of one predictions file per size, each into a new database."""
    workdir = Path(tempfile.mkdtemp(prefix="ffbench-backfill-scale-"))
    config = workdir / "feedbackflow.toml"
    config.write_text(data.config_toml())
    runs = []
    async with running_stack(with_broker=False) as stack:
        for rows in sizes:
            path = workdir / f"predictions-{rows}.parquet"
            _say(f"writing {rows:,} predictions")
            write_predictions(rows, path)
            env = {
                **os.environ,
                "FEEDBACKFLOW_CONFIG": str(config),
                "FEEDBACKFLOW_DATABASE_URL": await stack.database(f"scale{rows}"),
            }
            command = [sys.executable, "-m", "workers.cli", "backfill", "--no-progress"]
            command += ["--batch-rows", str(BATCH_ROWS)]
            seconds, rss = run_command([*command, "--direct", str(path)], env)
            runs.append(
                Run(f"backfill --direct, one Parquet file of {rows:,} rows", rows, seconds, rss)
            )
            _say(f"{runs[-1].what}: {runs[-1].per_second:,.0f} rows/s, {rss:.0f} MB")
            path.unlink()
            await stack.drop_databases()
    return runs


def _feedback_rows(events: data.EventSet) -> int:
    return events.feedback


def table(runs: list[Run], ratios: bool = True) -> str:
    lines = ["| what | rows | seconds | rows/s | peak RSS |", "|---|---:|---:|---:|---:|"]
    for run in runs:
        rss = "" if run.peak_rss_mb is None else f"{run.peak_rss_mb:.0f} MB"
        lines.append(
            f"| {run.what} | {run.rows:,} | {run.seconds:.1f} | {run.per_second:,.0f} | {rss} |"
        )
    if not ratios:
        return "\n".join(lines)
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
    parser.add_argument("--scale", type=int, nargs="+", metavar="N", help="see above")
    args = parser.parse_args()
    if args.scale:
        print(table(asyncio.run(scale(args.scale)), ratios=False))
    else:
        print(table(asyncio.run(bench(args.rows))))


if __name__ == "__main__":
    main()
