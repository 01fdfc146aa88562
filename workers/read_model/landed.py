"""What landed in Postgres, per model and metric: the demo's table, and its self-check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg

# The label of feedback with no model: pending feedback has no joined prediction yet.
NO_MODEL = "(none)"

REPORT_SQL = """
SELECT COALESCE(model, $1) AS model, metric, status, count(*) AS n,
       count(*) FILTER (WHERE value_bool) AS positives,
       COALESCE(sum(value_float), 0) AS value_sum
FROM feedbackflow.feedback GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


@dataclass
class Landed:
    status: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    positives: Counter[tuple[str, str]] = field(default_factory=Counter)
    value_sums: Counter[tuple[str, str]] = field(default_factory=Counter)
    predictions: int = 0
    dead_letters: int = 0


async def landed(conn: asyncpg.Connection) -> Landed:
    result = Landed()
    for row in await conn.fetch(REPORT_SQL, NO_MODEL):
        model, metric, status = row["model"], row["metric"], row["status"]
        result.status[(model, metric, status)] += row["n"]
        if status == "joined":
            result.positives[(model, metric)] += row["positives"]
            result.value_sums[(model, metric)] += row["value_sum"]
    result.predictions = await conn.fetchval("SELECT count(*) FROM feedbackflow.predictions")
    result.dead_letters = await conn.fetchval("SELECT count(*) FROM feedbackflow.dead_letters")
    return result


def render(result: Landed) -> str:
    keys = sorted({(m, k) for m, k, _ in result.status})
    lines = [
        f"{'model':<14} {'metric':<14} {'joined':>7} {'pending':>8} {'expired':>8} "
        f"{'% positive':>11} {'mean':>6}"
    ]
    for model, metric in keys:
        joined = result.status[(model, metric, "joined")]
        positive = (
            f"{100 * result.positives[(model, metric)] / joined:.1f}"
            if joined and metric.endswith("rating")
            else ""
        )
        mean = (
            f"{result.value_sums[(model, metric)] / joined:.2f}"
            if joined and not metric.endswith("rating")
            else ""
        )
        lines.append(
            f"{model:<14} {metric:<14} {joined:>7} "
            f"{result.status[(model, metric, 'pending')]:>8} "
            f"{result.status[(model, metric, 'expired')]:>8} {positive:>11} {mean:>6}"
        )
    lines.append(f"predictions stored: {result.predictions}; dead letters: {result.dead_letters}")
    return "\n".join(lines)
