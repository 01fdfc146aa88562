"""The read model's costs: each query of ``workers.read_model.queries`` over 7 and 90 days with
100k and with 10M feedback stored over 90 days, and the rebuild that filled them.

Each size gets a fresh database filled by SQL (``bench.read_model_fill``) and rebuilt; each query
then runs once to warm the cache and ``RUNS`` times timed; the median is kept.  The window write
with and without maintenance is measured apart (``python -m bench.run statements`` against the
commit before, interleaved; bench/explanation.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.infra import Stack
from bench.read_model_fill import fill
from workers.read_model import queries

RUNS = 5
SPAN = timedelta(days=90)
RANGES = {"7d": timedelta(days=7), "90d": timedelta(days=90)}
TARGET_MS = 100.0

Run = Callable[[asyncpg.Connection, queries.Selection], Awaitable[list[Any]]]


async def _cohen(conn: asyncpg.Connection, selection: queries.Selection) -> list[Any]:
    return await queries.cohen_kappa(conn, selection, "llm_judge", "human")


QUERIES: dict[str, Run] = {
    "feedback_volume": queries.feedback_volume,
    "metric_values": queries.metric_values,
    "category_distribution": queries.category_distribution,
    "delay_percentiles_over_time": queries.delay_percentiles_over_time,
    "delay_percentiles": queries.delay_percentiles,
    "coverage": queries.coverage,
    "backlog": queries.backlog,
    "cohen_kappa": _cohen,
    "fleiss_kappa": queries.fleiss_kappa,
    "latest_comments": queries.latest_comments,
}


async def time_queries(conn: asyncpg.Connection, end: datetime) -> dict[str, dict[str, Any]]:
    """Per query and range: median milliseconds and the rows returned."""
    timings: dict[str, dict[str, Any]] = {}
    for name, run in QUERIES.items():
        for label, length in RANGES.items():
            selection = queries.Selection(end - length, end)
            rows = len(await run(conn, selection))
            seconds = []
            for _ in range(RUNS):
                started = time.perf_counter()
                await run(conn, selection)
                seconds.append(time.perf_counter() - started)
            timings[f"{name} {label}"] = {
                "ms": 1000 * statistics.median(seconds),
                "rows": rows,
            }
    return timings


async def measure(stack: Stack, sizes: list[int], say: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {"sizes": []}
    for size in sizes:
        url = await stack.database(f"rm{size}")
        conn = await asyncpg.connect(url)
        try:
            end = datetime.now(UTC).replace(microsecond=0)
            started = time.perf_counter()
            seconds = await fill(conn, size, end, SPAN)
            fill_seconds = time.perf_counter() - started
            say(f"{size:,} feedback filled in {fill_seconds:.0f}s (rebuild {seconds:.0f}s)")
            timings = await time_queries(conn, end)
            rollup_rows = await conn.fetchval(
                "SELECT (SELECT count(*) FROM feedbackflow.feedback_rollup)"
                " + (SELECT count(*) FROM feedbackflow.feedback_delay_rollup)"
            )
            feedback = await conn.fetchval("SELECT count(*) FROM feedbackflow.feedback")
            for key, timing in timings.items():
                say(f"    {key:36s} {timing['ms']:8.1f} ms  {timing['rows']:6d} rows")
            results["sizes"].append(
                {
                    "feedback": feedback,
                    "fill_seconds": fill_seconds,
                    "rebuild_seconds": seconds,
                    "rollup_rows": rollup_rows,
                    "queries": timings,
                }
            )
        finally:
            await conn.close()
        await stack.drop_databases()  # 10M rows take gigabytes: one database at a time
    return results


def table(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    header = " | ".join(f"{s['feedback']:,} feedback, {r}" for s in sizes for r in RANGES)
    lines = [
        f"| query | {header} | target |",
        "|---|" + "---:|" * (len(sizes) * len(RANGES)) + "---|",
    ]
    for name in QUERIES:
        cells = []
        for s in sizes:
            for r in RANGES:
                t = s["queries"][f"{name} {r}"]
                cells.append(f"{t['ms']:.1f} ms ({t['rows']} rows)")
        worst = max(s["queries"][f"{name} {r}"]["ms"] for s in sizes for r in RANGES)
        met = "met" if worst < TARGET_MS else "**missed**"
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | < {TARGET_MS:.0f} ms: {met} |")
    lines.append("")
    for s in sizes:
        lines.append(
            f"- {s['feedback']:,} feedback: filled by SQL in {s['fill_seconds']:.0f} s, of which "
            f"the rebuild {s['rebuild_seconds']:.0f} s; {s['rollup_rows']:,} rows in "
            "feedback_rollup and feedback_delay_rollup."
        )
    return "\n".join(lines)
