"""Feedback by every kind of target, with 100 thousand and with millions of predictions stored.

The history is generated server-side (``INSERT ... SELECT generate_series``, not through Kafka),
one day partition at a time over 90 days, in four shapes by row number: a UUIDv7 id with its
default join key; a UUIDv4 id with its default join key; a UUIDv7 id with a join key of its own
(``tr-`` and 32 hex digits, an MLflow trace id's shape); a UUIDv7 id in an episode (two per
episode).  Where the key directory exists (migration 0007) it is filled the way the migration
fills it for predictions stored before it, then everything is ANALYZEd.

A measurement (``measure``, one process) writes, per kind, windows holding only a burst of
``BURST`` feedback naming stored predictions of that kind, picked at random across the history
(fresh ids each time), and times ``SinkConnection.write``; then windows of the history bench's
shape (35k new predictions, 15k feedback by UUIDv7: ``window``), for what writing predictions
costs.  Each process imports ``workers`` from its working directory, so the same measurement
runs against another commit's code (``compare``: the commit before, in a temporary worktree,
processes interleaved on the same database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench import history
from bench.ceilings import ensure_days, recent_days
from bench.infra import LOCAL_POSTGRES
from ingest.metrics.registry import registry_from_mapping
from ingest.sdk.producer import uuid7
from ingest.topics import TopicNames
from workers.devstack.servers import create_database
from workers.postgres.migrate import migrate
from workers.postgres.sink import SinkConnection
from workers.stream.window import WindowBuffer, WindowContents
from workers.testing import traffic as data

HISTORY_DAYS = 90
BURST = 20_000
KINDS = ("uuid7_id", "uuid4_id", "join_key", "episode")
TOPICS = TopicNames("ffbench-kinds")
HERE = Path(__file__).resolve().parent.parent
# An episode is rated by an episode-level metric, a prediction by a prediction-level one.
REGISTRY = registry_from_mapping(
    {
        "metrics": {
            "haiku_rating": {"type": "boolean", "level": "inference"},
            "session_solved": {"type": "boolean", "level": "episode"},
        }
    }
)

# Row n's shape is n % 4 (see the module's docstring); ids from md5 of a random text, with the
# version and variant bits set (UUIDv7: 48-bit ms of the row's time first).
_INSERT_DAY = """
INSERT INTO feedbackflow.predictions (prediction_id, join_key, ts, episode_id, application,
    model, inputs, outputs, tags, ingested_at)
SELECT g.id, CASE WHEN g.n % 4 = 2 THEN 'tr-' || g.h ELSE g.id::text END, g.t,
       CASE WHEN g.n % 4 = 3 THEN md5($1::text || (g.n / 8)::text)::uuid END,
       'generate_haiku', CASE WHEN g.n % 2 = 0 THEN 'gpt-haiku-a' ELSE 'gpt-haiku-b' END,
       '{"topic": "rain", "temperature": 0.7}'::jsonb,
       '{"haiku": "rain at dusk / five seven five syllables / the worker joins it"}'::jsonb,
       '{"env": "bench"}'::jsonb, g.t
FROM (
    SELECT s.n, s.t, s.h,
           CASE WHEN s.n % 4 = 1
                THEN (substr(s.h, 1, 12) || '4' || substr(s.h, 14, 3) || '8'
                      || substr(s.h, 18, 15))::uuid
                ELSE (lpad(to_hex(floor(extract(epoch FROM s.t) * 1000)::bigint), 12, '0')
                      || '7' || substr(s.h, 1, 3) || '8' || substr(s.h, 4, 15))::uuid
           END AS id
    FROM (SELECT n, $1::timestamptz + n * $2::interval AS t, md5(random()::text || n) AS h
          FROM generate_series(0, $3 - 1) n) s
) g
"""


def _directory_fill() -> str | None:
    """The statement that fills the key directory for one day of stored predictions, or None
    where the code measured has no directory."""
    try:
        from workers.postgres import key_directory  # absent before issue 15
    except ImportError:
        return None
    return f"""
INSERT INTO feedbackflow.prediction_keys (kind, key, ts, prediction_id, application, model)
SELECT k.kind, k.key, p.ts, p.prediction_id, p.application, p.model
FROM feedbackflow.predictions p
{key_directory.key_rows("p")}
WHERE p.ts >= $1 AND p.ts < $1 + interval '1 day' AND k.key IS NOT NULL
"""


async def _load_day(url: str, day_start: datetime, rows: int, fill: str | None) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_INSERT_DAY, day_start, timedelta(days=1) / max(rows, 1), rows)
        if fill is not None:  # this day's keys, those of earlier growth included: once each
            await conn.execute(
                "DELETE FROM feedbackflow.prediction_keys"
                " WHERE ts >= $1 AND ts < $1 + interval '1 day'",
                day_start,
            )
            await conn.execute(fill, day_start)
    finally:
        await conn.close()


async def grow(url: str, total: int, already: int) -> float:
    """Add predictions (and their keys) until ``total`` are stored, spread over the 90 days
    before today (two connections: one per core).  Returns seconds spent."""
    started = time.perf_counter()
    add = total - already
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=d) for d in range(1, HISTORY_DAYS + 1)]
    per_day = [add // HISTORY_DAYS + (1 if i < add % HISTORY_DAYS else 0) for i in range(len(days))]
    conn = await asyncpg.connect(url)
    try:
        await ensure_days(conn, ("predictions", "feedback"), recent_days(back=HISTORY_DAYS + 1))
    finally:
        await conn.close()
    fill = _directory_fill()
    jobs = [(day, rows) for day, rows in zip(days, per_day, strict=True) if rows]
    for i in range(0, len(jobs), 2):
        await asyncio.gather(*(_load_day(url, day, rows, fill) for day, rows in jobs[i : i + 2]))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE feedbackflow.predictions")
        if fill is not None:
            await conn.execute("VACUUM ANALYZE feedbackflow.prediction_keys")
        await conn.execute("ANALYZE feedbackflow.feedback")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _targets(conn: asyncpg.Connection, per_kind: int) -> dict[str, list[dict[str, str]]]:
    """``per_kind`` stored targets of each kind, sampled across the history."""
    stored = await conn.fetchval("SELECT count(*) FROM feedbackflow.predictions")
    percent = min(100.0, 100.0 * 8 * per_kind / max(stored, 1))
    while True:
        rows = await conn.fetch(
            "SELECT prediction_id::text AS id, join_key, episode_id::text AS episode"
            f" FROM feedbackflow.predictions TABLESAMPLE BERNOULLI ({percent})"
        )
        found: dict[str, list[dict[str, str]]] = {kind: [] for kind in KINDS}
        for r in rows:
            if r["episode"] is not None:
                found["episode"].append({"episode_id": r["episode"]})
            elif r["join_key"] != r["id"]:
                found["join_key"].append({"join_key": r["join_key"]})
            elif r["id"][14] == "4":
                found["uuid4_id"].append({"prediction_id": r["id"]})
            elif r["id"][14] == "7":
                found["uuid7_id"].append({"prediction_id": r["id"]})
        if percent >= 100 or all(len(v) >= per_kind for v in found.values()):
            rng = random.Random(per_kind)
            return {kind: rng.sample(v, min(per_kind, len(v))) for kind, v in found.items()}
        percent = min(100.0, percent * 2)


def _feedback_window(targets: list[dict[str, str]], offset: int) -> WindowContents:
    now_ms = int(time.time() * 1000)
    messages = [
        data.Message(
            True,
            b"k",
            json.dumps(
                {
                    "feedback_id": str(uuid7(now_ms)),
                    "metric": "session_solved" if "episode_id" in target else "haiku_rating",
                    "value": True,
                    "timestamp": now_ms,
                    **target,
                }
            ).encode(),
        )
        for target in targets
    ]
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    buffer.add(data.decode(messages, TOPICS, REGISTRY), {("bench", 0): offset})
    return buffer.drain()


def _mixed_window(rng: random.Random, v7_ids: list[str], offset: int) -> WindowContents:
    buffer = WindowBuffer(length_seconds=1.0, max_events=10**9, monotonic=time.monotonic)
    # The history bench's own window, so that both measure the same thing.
    buffer.add(history._window(rng, v7_ids), {("bench", 0): offset})  # noqa: SLF001
    return buffer.drain()


async def measure(url: str, runs: int, burst: int, seed: int) -> dict[str, list[float]]:
    """Seconds per window write, per kind (and ``window``), ``runs`` each, kinds interleaved."""
    conn = await asyncpg.connect(url)
    try:
        await ensure_days(conn, ("predictions", "feedback"), recent_days(back=HISTORY_DAYS + 1))
        # A day more than the history spans: every stored prediction is within it.
        sink = SinkConnection(conn, retention=timedelta(days=HISTORY_DAYS + 1))
        # Enough for the bursts, the bench window (6k stored targets) and the warm-up.
        targets = await _targets(conn, max(burst * runs, 6_000) + 1_000)
        v7_ids = [t["prediction_id"] for t in targets["uuid7_id"]]
        rng = random.Random(seed)
        # Warm-up: staging tables, caches.
        warm = _feedback_window([dict(t) for t in targets["uuid7_id"][-1_000:]], 1)
        await sink.write(warm, datetime.now(UTC))
        seconds: dict[str, list[float]] = {kind: [] for kind in (*KINDS, "window")}
        offset = 2
        for run in range(runs):
            for kind in KINDS:
                burst_targets = targets[kind][run * burst : (run + 1) * burst]
                contents = _feedback_window(burst_targets, offset)
                offset += 1
                started = time.perf_counter()
                outcome = await sink.write(contents, datetime.now(UTC))
                seconds[kind].append(time.perf_counter() - started)
                if outcome.resolved.get("joined", 0) != len(burst_targets):
                    raise RuntimeError(f"{kind}: {outcome.resolved} of {len(burst_targets)}")
            contents = _mixed_window(rng, v7_ids[: history.WINDOW_EVENTS], offset)
            offset += 1
            started = time.perf_counter()
            await sink.write(contents, datetime.now(UTC))
            seconds["window"].append(time.perf_counter() - started)
        return seconds
    finally:
        await conn.close()


# The alternative layout (docs/architecture.md, "The key directory"): the same rows, partitioned
# by day of the prediction's time like the predictions, to be dropped with them.
_BY_DAY = "feedbackflow.prediction_keys_by_day"
_LOOK_UP = """
SELECT count(m.ts) FROM unnest($1::text[]) t (key)
LEFT JOIN LATERAL (
    SELECT d.ts FROM {table} d WHERE d.kind = 'k' AND d.key = t.key
    ORDER BY d.ts DESC LIMIT 1) m ON true
"""


async def directory_layouts(url: str, keys: list[str], runs: int) -> dict[str, list[float]]:
    """Seconds to look ``keys`` (join keys) up in the directory as built, and in a copy
    partitioned by day; the copy is made here and dropped after."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {_BY_DAY}")
        await conn.execute(
            f"CREATE TABLE {_BY_DAY} (LIKE feedbackflow.prediction_keys) PARTITION BY RANGE (ts)"
        )
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for d in range(-2, HISTORY_DAYS + 2):
            start = today - timedelta(days=d)
            await conn.execute(
                f"CREATE TABLE {_BY_DAY}_{d + 2} PARTITION OF {_BY_DAY}"
                f" FOR VALUES FROM ('{start.isoformat()}') TO"
                f" ('{(start + timedelta(days=1)).isoformat()}')"
            )
        await conn.execute(f"INSERT INTO {_BY_DAY} SELECT * FROM feedbackflow.prediction_keys")
        await conn.execute(f"CREATE INDEX ON {_BY_DAY} (kind, key, ts)")
        await conn.execute(f"VACUUM ANALYZE {_BY_DAY}")
        await conn.execute("SET enable_seqscan = off; SET jit = off")
        seconds: dict[str, list[float]] = {"one_table": [], "by_day": []}
        for _ in range(runs):
            for layout, table in (
                ("one_table", "feedbackflow.prediction_keys"),
                ("by_day", _BY_DAY),
            ):
                started = time.perf_counter()
                found = await conn.fetchval(_LOOK_UP.format(table=table), keys)
                seconds[layout].append(time.perf_counter() - started)
                if found != len(keys):
                    raise RuntimeError(f"{layout}: found {found} of {len(keys)}")
        return seconds
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {_BY_DAY}")
        await conn.close()


@dataclass(frozen=True)
class Point:
    """One history size: per code version, per kind, the seconds of every timed window."""

    stored: int
    seconds: dict[str, dict[str, list[float]]]
    layouts: dict[str, list[float]]

    def median(self, version: str, kind: str) -> float:
        return statistics.median(self.seconds[version][kind])


def _measure_in(tree: Path, url: str, runs: int, burst: int, seed: int) -> dict[str, list[float]]:
    """``measure`` in a process whose ``workers`` is ``tree``'s."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.target_kinds",
            "measure",
            url,
            *map(str, (runs, burst, seed)),
        ],
        cwd=tree,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"measure in {tree} failed:\n{out.stderr}")
    result: dict[str, list[float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def compare(
    url: str, sizes: list[int], rounds: int, burst: int, old: Path | None
) -> list[Point]:
    """For each size: grow the history, then ``rounds`` rounds of one ``measure`` process per
    code version (this tree's, and ``old``'s when given), interleaved, in alternate order."""
    trees = {"new": HERE, **({"old": old} if old else {})}
    if old is not None:  # the same measurement, whatever the other commit's bench holds
        shutil.copy(__file__, old / "bench" / "target_kinds.py")
    points = []
    stored = 0
    for size in sizes:
        _say(f"growing the history to {size:,} predictions")
        took = await grow(url, size, stored)
        _say(f"    {took:.0f}s")
        stored = size
        seconds: dict[str, dict[str, list[float]]] = {v: {} for v in trees}
        for r in range(rounds):
            # Each version first in every other round: what runs first meets the cache the
            # other left, or the growth's VACUUM left.
            order = list(trees.items())
            for version, tree in order if r % 2 == 0 else order[::-1]:
                got = await asyncio.to_thread(_measure_in, tree, url, 1, burst, 1000 * r + size)
                for kind, values in got.items():
                    seconds[version].setdefault(kind, []).extend(values)
                _say(f"    {size:,} {version} round {r}: " + _rates(got, burst))
        conn = await asyncpg.connect(url)
        try:
            keys = [t["join_key"] for t in (await _targets(conn, burst))["join_key"]]
        finally:
            await conn.close()
        layouts = await directory_layouts(url, keys, rounds)
        _say(f"    layouts ({len(keys):,} join keys): " + _rates(layouts, len(keys)))
        points.append(Point(size, seconds, layouts))
    return points


def _rates(seconds: dict[str, list[float]], burst: int) -> str:
    return ", ".join(
        f"{kind} {burst / statistics.median(s):,.0f}/s"
        if kind != "window"
        else f"window {statistics.median(s):.2f}s"
        for kind, s in seconds.items()
    )


def as_result(points: list[Point], burst: int, note: str) -> dict[str, Any]:
    return {
        "burst": burst,
        "note": note,
        "points": [
            {"stored": p.stored, "seconds": p.seconds, "layouts": p.layouts} for p in points
        ],
    }


async def _fresh_database(purpose: str) -> tuple[str, str]:
    """A migrated database of this tree's schema (``ffbench_kinds_*``): its name and URL."""
    name = f"ffbench_kinds_{purpose}_{uuid.uuid4().hex[:6]}"
    url = await create_database(LOCAL_POSTGRES, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return name, url


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(LOCAL_POSTGRES)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def run(sizes: list[int], rounds: int, burst: int, old: Path | None) -> dict[str, Any]:
    name, url = await _fresh_database("compare")
    try:
        points = await compare(url, sizes, rounds, burst, old)
    finally:
        await _drop_database(name)
    note = "history filled in SQL (generate_series), not through Kafka"
    return as_result(points, burst, note)


def main() -> None:
    """``measure URL RUNS BURST SEED``: one measuring process, JSON on its last line (what
    ``compare`` runs in each tree)."""
    parser = argparse.ArgumentParser(prog="python -m bench.target_kinds")
    parser.add_argument("command", choices=("measure",))
    parser.add_argument("url")
    parser.add_argument("runs", type=int)
    parser.add_argument("burst", type=int)
    parser.add_argument("seed", type=int)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.url, args.runs, args.burst, args.seed))))


if __name__ == "__main__":
    main()
