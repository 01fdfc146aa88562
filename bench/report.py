"""Printing the table and writing docs/performance.md from the saved results.

Each phase saves its numbers as JSON under ``bench/results/``; the document is rendered from
whatever is saved, so running ``history`` alone does not erase the throughput table and vice
versa.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import read_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DOC = ROOT / "docs" / "performance.md"
EXPLANATION = Path(__file__).resolve().parent / "explanation.md"


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version()}


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    result = {**result, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), **machine()}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _met(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def throughput_table(r: dict[str, Any]) -> str:
    e2e = r["worker"]["per_second"]
    consume, write, faust = (
        r["consume"]["per_second"],
        r["write"]["per_second"],
        r["faust"]["per_second"],
    )
    lower = min(consume, write)
    lines = [
        f"Events: {r['events']:,} ({r['predictions']:,} predictions, {r['feedback']:,} feedback, "
        f"{r['early_feedback']:,} of it produced before its prediction); "
        f"{r['partitions']} partitions per topic.",
        "",
        "| # | what | events | seconds | events/s |",
        "|---|---|---:|---:|---:|",
    ]
    for n, key, what in (
        ("1", "consume", "ceiling: aiokafka getmany(10000) + model_validate_json"),
        ("2", "write", "ceiling: asyncpg COPY of the decoded rows (50k-row transactions)"),
        (
            "3",
            "faust",
            f"naive faust agent, one event at a time ({r['faust']['cpu_percent']:.0f}% CPU)",
        ),
        ("4", "worker", "feedbackflow worker, Kafka → joined rows committed in Postgres"),
    ):
        x = r[key]
        lines.append(
            f"| {n} | {what} | {x['events']:,} | {x['seconds']:.2f} | {x['per_second']:,.0f} |"
        )
    lat = r["latency"]
    lines += [
        "",
        "| ratio / measure | value | target | |",
        "|---|---:|---|---|",
        f"| 4 / 1 (consume ceiling) | {e2e / consume:.2f} | | |",
        f"| 4 / 2 (write ceiling) | {e2e / write:.2f} | | |",
        f"| 4 / min(1, 2) | {e2e / lower:.2f} | ≥ 0.50 | {_met(e2e / lower >= 0.5)} |",
        f"| 4 / 3 (naive faust) | {e2e / faust:.1f} | ≥ 10 | {_met(e2e / faust >= 10)} |",
        f"| worker peak RSS (this run) | {r['worker']['peak_rss_mb']:.0f} MB | < 300 MB | "
        f"{_met(r['worker']['peak_rss_mb'] < 300)} |",
        f"| produce → visible p50 (1 s window, {lat['rate']:,.0f} ev/s, "
        f"{lat['samples']:,} samples) | {lat['p50_ms']:,.0f} ms | | |",
        f"| produce → visible p99 | {lat['p99_ms']:,.0f} ms | | |",
        "",
        "Worker peak RSS by window cap and pending feedback already in Postgres "
        "(each a fresh worker over the same topics):",
        "",
        "| run | max_window_events | pending feedback before | events/s | windows | "
        "time in window writes | feedback via the pending queue | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in r["rss_runs"]:
        queued = run.get("feedback_queued")
        lines.append(
            f"| {run['label']} | {run['max_window_events']:,} | {run['pending_before']:,} | "
            f"{run['per_second']:,.0f} | {run['windows']} | {run['window_write_seconds']:.1f} s | "
            f"{'n/a' if queued is None else f'{queued:,}'} | {run['peak_rss_mb']:.0f} MB |"
        )
    return "\n".join([*lines, "", *cpu_table(r)])


def cpu_table(r: dict[str, Any]) -> list[str]:
    """Where the cores go: CPU time per event of each process over each end-to-end run."""
    runs = [run for run in r["rss_runs"] if run.get("cpu_seconds")]
    if not runs:
        return []
    lines = [
        "CPU time per event over each run (from the worker's first event to its last join; "
        "`/proc/<pid>/stat` of the worker, its Postgres backends and the broker):",
        "",
        "| run | worker µs/event | Postgres µs/event | broker µs/event | total µs/event | "
        "cores busy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        cpu = run["cpu_seconds"]
        per_event = {who: 1e6 * seconds / r["events"] for who, seconds in cpu.items()}
        total = sum(per_event.values())
        cores = total * run["per_second"] / 1e6
        lines.append(
            f"| {run['label']} | {per_event['worker']:.1f} | {per_event['postgres']:.1f} | "
            f"{per_event['broker']:.1f} | {total:.1f} | {cores:.2f} |"
        )
    return lines


def history_table(h: dict[str, Any]) -> str:
    small, large = h["points"][0], h["points"][-1]
    ratio = large["median"] / small["median"]
    lines = [
        "| predictions stored | window write times (s) | median (s) |",
        "|---:|---|---:|",
    ]
    for p in h["points"]:
        times = ", ".join(f"{t:.2f}" for t in p["write_seconds"])
        lines.append(f"| {p['stored_predictions']:,} | {times} | {p['median']:.2f} |")
    names = list(large.get("statement_seconds", {}))
    if names:
        lines += [
            "",
            "Mean seconds per statement of `SinkConnection.write` (timed through a delegating "
            "connection):",
            "",
            "| statement | "
            + " | ".join(f"{p['stored_predictions']:,} stored" for p in h["points"])
            + " |",
            "|---|" + "---:|" * len(h["points"]),
        ]
        for name in names:
            cells = " | ".join(f"{p['statement_seconds'].get(name, 0.0):.3f}" for p in h["points"])
            lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        f"Ratio {large['stored_predictions']:,} / {small['stored_predictions']:,}: "
        f"**{ratio:.2f}** (target ≤ 1.5: {_met(ratio <= 1.5)}). Loading the history took "
        f"{h['load_seconds']:.0f} s.",
    ]
    return "\n".join(lines)


_KINDS = ("uuid7_id", "uuid4_id", "join_key", "episode")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def kinds_table(k: dict[str, Any]) -> str:
    """Feedback/s per target kind and history size (medians), the ratio to the UUIDv7 path, and
    window-close time at the largest history over the smallest; against the commit before where
    it was measured (bench.target_kinds)."""
    burst, points = k["burst"], k["points"]
    versions = [v for v in ("new", "old") if v in points[0]["seconds"]]
    lines = [
        "| stored | code | "
        + " | ".join(f"{kind} feedback/s (x UUIDv7)" for kind in _KINDS)
        + " | bench window (s) |",
        "|---:|---|" + "---:|" * (len(_KINDS) + 1),
    ]
    for p in points:
        for version in versions:
            secs = p["seconds"][version]
            v7 = burst / _median(secs["uuid7_id"])
            cells = []
            for kind in _KINDS:
                rate = burst / _median(secs[kind])
                cells.append(f"{rate:,.0f}" + ("" if kind == "uuid7_id" else f" ({rate / v7:.2f})"))
            lines.append(
                f"| {p['stored']:,} | {version} | {' | '.join(cells)} | "
                f"{_median(secs['window']):.2f} |"
            )
    small, large = points[0], points[-1]
    big, few = large["seconds"]["new"], small["seconds"]["new"]
    growth = ", ".join(
        f"{kind} {_median(big[kind]) / _median(few[kind]):.2f}" for kind in (*_KINDS, "window")
    )
    worst = max(_median(big[kind]) / _median(few[kind]) for kind in (*_KINDS, "window"))
    v7_at_large = min(_median(big["uuid7_id"]) / _median(big[kind]) for kind in _KINDS[1:])
    lines += [
        "",
        f"Window-close time with {large['stored']:,} stored over {small['stored']:,} (this "
        f"commit): {growth} (target ≤ 1.5: {_met(worst <= 1.5)}). Slowest kind over UUIDv7 "
        f"with {large['stored']:,} "
        f"stored: **{v7_at_large:.2f}** (target ≥ 0.8: {_met(v7_at_large >= 0.8)}).",
    ]
    if "old" in versions:
        rows = []
        for p in points:
            new, old = p["seconds"]["new"], p["seconds"]["old"]
            v7 = _median(old["uuid7_id"]) / _median(new["uuid7_id"])
            window = _median(old["window"]) / _median(new["window"])
            rows.append(f"{p['stored']:,} stored: UUIDv7 {v7:.2f}, bench window {window:.2f}")
        lines += [
            "",
            "This commit's speed over the commit before's (> 1: faster; target ≥ 0.95): "
            + "; ".join(rows)
            + ".",
        ]
    layouts = [p for p in points if p.get("layouts")]
    if layouts:
        lines += [
            "",
            "The directory's layout, the same join keys looked up (a LATERAL probe each, SQL "
            "alone): "
            + "; ".join(
                f"{p['stored']:,} stored: one table "
                f"{burst / _median(p['layouts']['one_table']):,.0f}/s, partitioned by day "
                f"{burst / _median(p['layouts']['by_day']):,.0f}/s"
                for p in layouts
            )
            + ".",
        ]
    lines += ["", f"{burst:,} feedback per window; {k['note']}. Run: {k['date']}."]
    return "\n".join(lines)


def gateway_table(g: dict[str, Any]) -> str:
    noop, feedback, batch = g["noop"], g["feedback"], g["v1_batch"]
    half, *bursty = g["half_rate"]
    batch_events = batch["median"] * g["batch"]
    vs_noop = feedback["median"] / noop["median"]
    vs_sdk = batch_events / g["sdk_median"]

    def rates(x: dict[str, Any]) -> str:
        return ", ".join(f"{r:,.0f}" for r in x["requests_per_second"])

    def cores(x: dict[str, Any]) -> str:
        return " ".join(f"{who} {c:.2f}" for who, c in x["cpu_cores"].items())

    lines = [
        f"{g['rounds']} interleaved rounds of {g['seconds']:.0f} s each, `hey` with "
        f"{g['concurrency']} connections; the worker drains the topics meanwhile.",
        "",
        "| # | what | requests/s per round | median | p50 | p99 | cores busy (median) |",
        "|---|---|---|---:|---:|---:|---|",
        f"| 1 | no-op route, same server (ceiling) | {rates(noop)} | {noop['median']:,.0f} | "
        f"{noop['p50_ms']:.1f} ms | {noop['p99_ms']:.1f} ms | {cores(noop)} |",
        f"| 2 | `POST /feedback` (key, validation, broker ack) | {rates(feedback)} | "
        f"{feedback['median']:,.0f} | {feedback['p50_ms']:.1f} ms | {feedback['p99_ms']:.1f} ms | "
        f"{cores(feedback)} |",
        f"| 3 | `POST /v1/batch` of {g['batch']} | {rates(batch)} | {batch['median']:,.0f} "
        f"({batch_events:,.0f} events/s) | {batch['p50_ms']:.1f} ms | {batch['p99_ms']:.1f} ms | "
        f"{cores(batch)} |",
        f"| 4 | SDK `log_feedback` straight to Kafka | "
        f"{', '.join(f'{r:,.0f}' for r in g['sdk_events_per_second'])} events/s | "
        f"{g['sdk_median']:,.0f} | | | |",
        "",
        "| ratio / measure | value | target | |",
        "|---|---:|---|---|",
        f"| 2 / 1 (requests/s) | {vs_noop:.2f} | ≥ 0.50 | {_met(vs_noop >= 0.5)} |",
        f"| p99 of 2 at half its peak ({half['requests_per_second']:,.0f} req/s from "
        f"{half['connections']} connections; p50 {half['p50_ms']:.1f} ms) | "
        f"{half['p99_ms']:.1f} ms | < 25 ms | {_met(half['p99_ms'] < 25)} |",
        *(
            f"| the same rate from {b['connections']} connections (bursts of "
            f"{b['connections']}; p50 {b['p50_ms']:.1f} ms) | {b['p99_ms']:.1f} ms | | |"
            for b in bursty
        ),
        f"| 3 / 4 (events/s) | {vs_sdk:.2f} | ≥ 0.50 | {_met(vs_sdk >= 0.5)} |",
    ]
    return "\n".join(lines)


def write_doc() -> Path:
    t, h, g, k = load("throughput"), load("history"), load("gateway"), load("kinds")
    parts = ["# Performance", ""]
    meta = t or h or {}
    parts += [
        f"Machine: {meta.get('nproc', '?')} cores, {meta.get('cpu', '?')}, Python "
        f"{meta.get('python', '?')}; broker (tansu, memory storage) and PostgreSQL 15 on the same "
        "machine. Numbers below are from real runs; regenerate with the commands shown.",
        "",
        "## Throughput, memory, latency",
        "",
        "```sh",
        "make bench   # = .venv/bin/python -m bench.run   (--events N, --pending N; see --help)",
        "```",
        "",
    ]
    parts += [f"Run: {t['date']}.", "", throughput_table(t)] if t else ["(not run yet)"]
    parts += [
        "",
        "## Cost that does not grow with history",
        "",
        "```sh",
        ".venv/bin/python -m bench.run history                 # 100k then 10M predictions stored",
        ".venv/bin/python -m bench.run history --quick         # 100k then 1M (smoke test)",
        "```",
        "",
        "Time for `SinkConnection.write` to close one 50k-event window (35k predictions, 15k "
        "feedback: 20% early, 40% for this window's predictions, 40% for stored predictions "
        "picked at random across 80 days of history).",
        "",
    ]
    parts += [f"Run: {h['date']}.", "", history_table(h)] if h else ["(not run yet)"]
    parts += [
        "",
        "## Feedback by any target",
        "",
        "```sh",
        ".venv/bin/python -m bench.run kinds --sizes 100000 10000000 --rounds 4 --old CHECKOUT",
        "```",
        "",
        "Windows of feedback only, each naming stored predictions of one kind, picked at random "
        "across 90 days (bench/target_kinds.py); and windows of the history bench's shape. "
        "Medians of the rounds, each round one process per commit, interleaved.",
        "",
    ]
    parts += [kinds_table(k)] if k else ["(not run yet)"]
    parts += [
        "",
        "## The HTTP gateway",
        "",
        "```sh",
        ".venv/bin/python -m bench.run gateway   # --rounds 3 --seconds 10 --concurrency 32",
        "```",
        "",
    ]
    parts += [f"Run: {g['date']}.", "", gateway_table(g)] if g else ["(not run yet)"]
    rm = load("read_model")
    parts += [
        "",
        "## The read model's queries",
        "",
        "```sh",
        ".venv/bin/python -m bench.run read-model   # --sizes 100000 10000000",
        "```",
        "",
        "Median of 5 runs of each query of `workers/read_model/queries.py` over the last 7 and "
        "90 days, with feedback spread over 90 days (filled by SQL, then rebuilt).",
        "",
    ]
    parts += [f"Run: {rm['date']}.", "", read_model.table(rm)] if rm else ["(not run yet)"]
    parts += ["", EXPLANATION.read_text().strip(), ""]
    DOC.write_text("\n".join(parts))
    return DOC
