"""``python -m bench.run [throughput|history|gateway|worker|statements|doc]``: one command per
set.

``read-model`` times the read model's queries with 100k and 10M feedback stored.
``throughput`` (the default, what ``make bench`` runs) measures in one run, on one event set:
(1) the consume+validate ceiling, (2) the COPY ceiling, (3) the naive faust agent, (4) the worker
end to end; then the worker's peak RSS by window cap and pending feedback, and the produce-to-
visible latency with a 1 s window.  ``history`` times closing a 50k-event window with 100k and
with 10M predictions stored (minutes of loading, hence separate); ``gateway`` the HTTP gateway
under load (bench.gateway_load).  All three rewrite
docs/performance.md from the saved results.  ``worker`` runs (4) alone, several times, to
compare two commits of the worker, and ``statements`` the window writes alone, per SQL
statement; neither writes anything.  ``kinds`` times feedback by each kind of target (UUIDv7 id,
UUIDv4 id, join key, episode) with 100k and with millions of predictions stored, optionally
interleaved with another commit's code (bench.target_kinds).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import history, read_model, report, target_kinds, window_notes, window_statements
from bench.ceilings import Throughput, consume_ceiling, write_ceiling
from bench.faust_agent import run_faust_agent
from bench.gateway_load import gateway_load
from bench.infra import running_stack
from bench.worker_e2e import EndToEnd, load_pending, run_end_to_end, run_latency
from ingest.topics import TopicNames
from workers.testing import traffic as data

# Events of the throughput runs: enough that the worker's fixed cost per run (its first fetch,
# and the last windows written after everything is read, ~0.3 s together) weighs under a tenth
# of a run, as it did not at 200,000 (a two-second run).  See docs/performance.md.
THROUGHPUT_EVENTS = 500_000


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _t(x: Throughput) -> dict[str, Any]:
    return {"events": x.events, "seconds": x.seconds, "per_second": x.per_second}


def _run(e: EndToEnd) -> dict[str, Any]:
    return {
        "label": e.label,
        "max_window_events": e.max_window_events,
        "pending_before": e.pending_before,
        "per_second": e.throughput.per_second,
        "peak_rss_mb": e.peak_rss_mb,
        "windows": e.windows,
        "window_write_seconds": e.window_write_seconds,
        "cpu_seconds": e.cpu_seconds,
        "feedback_queued": e.feedback_queued,
    }


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ffbench-"))
    _say(f"generating {args.events:,} events (logs in {workdir})")
    events = data.generate(args.events)
    topics = TopicNames(f"ffbench{uuid.uuid4().hex[:8]}")
    async with running_stack() as stack:
        seconds = await data.produce(stack.bootstrap, topics, events)
        _say(f"produced to {topics.prefix}.* in {seconds:.1f}s")

        consume = await consume_ceiling(stack.bootstrap, topics, events.events)
        _say(f"(1) consume ceiling: {consume.per_second:,.0f} events/s")

        rows = data.decode(events.messages, topics, data.registry())
        write = await write_ceiling(await stack.database("write"), rows)
        del rows
        _say(f"(2) write ceiling: {write.per_second:,.0f} events/s")

        faust = await asyncio.to_thread(
            run_faust_agent, stack.bootstrap, topics, events.events, workdir / "faust.log"
        )
        _say(f"(3) naive faust agent: {faust.throughput.per_second:,.0f} events/s")

        e2e = await run_end_to_end(
            "cap50k", stack.bootstrap, await stack.database("e2e"), topics, events, workdir
        )
        _say(f"(4) worker: {e2e.throughput.per_second:,.0f} events/s, {e2e.peak_rss_mb:.0f} MB")

        small_cap = await run_end_to_end(
            "cap10k",
            stack.bootstrap,
            await stack.database("cap10k"),
            topics,
            events,
            workdir,
            max_window_events=10_000,
        )
        _say(
            f"    cap 10k: {small_cap.throughput.per_second:,.0f} ev/s, "
            f"{small_cap.peak_rss_mb:.0f} MB"
        )

        pending_db = await stack.database("pending")
        _say(f"    loading {args.pending:,} pending feedback")
        await load_pending(pending_db, args.pending)
        pending = await run_end_to_end(
            "cap50k+pending",
            stack.bootstrap,
            pending_db,
            topics,
            events,
            workdir,
            pending_before=args.pending,
        )
        _say(
            f"    with pending: {pending.throughput.per_second:,.0f} ev/s, "
            f"{pending.peak_rss_mb:.0f} MB"
        )

        latency = await run_latency(
            stack.bootstrap,
            await stack.database("latency"),
            workdir,
            rate=args.latency_rate,
            seconds=args.latency_seconds,
        )
        _say(f"latency p50 {latency.p50_ms:.0f} ms, p99 {latency.p99_ms:.0f} ms")
    return {
        "events": events.events,
        "predictions": events.predictions,
        "feedback": events.feedback,
        "early_feedback": events.early_feedback,
        "partitions": data.PARTITIONS,
        "consume": _t(consume),
        "write": _t(write),
        "faust": {**_t(faust.throughput), "cpu_percent": faust.cpu_percent},
        "worker": {**_t(e2e.throughput), "peak_rss_mb": e2e.peak_rss_mb},
        "rss_runs": [_run(e2e), _run(small_cap), _run(pending)],
        "latency": asdict(latency),
    }


async def worker_only(args: argparse.Namespace) -> None:
    """Phase (4) alone, ``--runs`` times over one event set: for comparing two commits of the
    worker on a noisy machine (interleave runs of both; compare ratios, not absolute rates)."""
    workdir = Path(tempfile.mkdtemp(prefix="ffbench-"))
    events = data.generate(args.events)
    topics = TopicNames(f"ffbench{uuid.uuid4().hex[:8]}")
    async with running_stack() as stack:
        await data.produce(stack.bootstrap, topics, events)
        for run in range(args.runs):
            e2e = await run_end_to_end(
                f"worker{run}",
                stack.bootstrap,
                await stack.database(f"w{run}"),
                topics,
                events,
                workdir,
                max_window_events=args.max_window_events,
                windows_in_flight=args.windows_in_flight,
            )
            cpu = ", ".join(
                f"{who} {1e6 * seconds / events.events:.1f}"
                for who, seconds in e2e.cpu_seconds.items()
            )
            _say(
                f"(4) worker: {e2e.throughput.per_second:,.0f} events/s, "
                f"{e2e.peak_rss_mb:.0f} MB, CPU us/event: {cpu}, "
                f"feedback via the pending queue: {e2e.feedback_queued:,}"
            )


async def statements_only(args: argparse.Namespace) -> None:
    """The window writes alone, per SQL statement (bench/window_statements.py), on ``--runs``
    fresh databases; it writes nothing."""
    events = data.generate(args.events)
    async with running_stack(with_broker=False) as stack:
        for run in range(args.runs):
            url = await stack.database(f"s{run}")
            times = await window_statements.time_statements(url, events, args.max_window_events)
            _say(f"window writes: {times.per_event_us(times.seconds):.2f} us/event")
            for name, seconds in sorted(times.per_statement.items(), key=lambda kv: -kv[1]):
                _say(f"    {name:32s} {times.per_event_us(seconds):5.2f} us/event")
            applying = times.per_event_us(times.apply_seconds)
            _say(f"read model apply, after each window: {applying:.2f} us/event")


async def notes_only(args: argparse.Namespace) -> None:
    """What noting its changes for the read model costs a window (bench/window_notes.py), on
    ``--runs`` fresh databases; it writes nothing."""
    events = data.generate(args.events)
    async with running_stack(with_broker=False) as stack:
        for run in range(args.runs):
            url = await stack.database(f"n{run}")
            cost = await window_notes.measure(url, events, args.max_window_events, args.repeats)
            _say(
                f"windows before: {cost.window_us_per_event:.2f} us/event (median of "
                f"{len(cost.window_seconds)}); the last window, {cost.window_events:,} events, "
                f"medians of {args.repeats} alternated runs:"
            )
            for name in cost.seconds:
                _say(f"    {name:20s} {cost.us_per_event(name):6.2f} us/event")
            noting = cost.noting_us_per_event
            share = noting / (cost.window_us_per_event - noting)
            _say(f"noting: {noting:.2f} us/event, +{100 * share:.1f}% of a window without it")


async def read_model_run(args: argparse.Namespace) -> dict[str, Any]:
    async with running_stack(with_broker=False) as stack:
        return await read_model.measure(stack, args.sizes, _say)


async def history_run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [100_000, 1_000_000 if args.quick else args.predictions]
    points = []
    load_seconds = 0.0
    async with running_stack(with_broker=False) as stack:
        url = await stack.database("history")
        stored = 0
        for i, size in enumerate(sizes):
            _say(f"growing history to {size:,} predictions")
            load_seconds += await history.grow_history(url, size, stored)
            stored = size
            point = await history.time_window_writes(url, size, runs=args.runs, seed=100 + i)
            _say(
                f"    window write with {size:,} stored: median {point.median:.2f}s "
                f"{point.write_seconds}"
            )
            points.append({**asdict(point), "median": point.median})
            stored += (args.runs + 1) * (history.WINDOW_EVENTS * 7 // 10)
    return {"points": points, "load_seconds": load_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    t = sub.add_parser("throughput", help="(default) ceilings, faust, worker, RSS, latency")
    h = sub.add_parser("history", help="window write time with 100k vs 10M stored")
    sub.add_parser("doc", help="only re-render docs/performance.md from bench/results/")
    rm = sub.add_parser("read-model", help="the read model's queries at 100k and 10M feedback")
    rm.add_argument("--sizes", type=int, nargs="+", default=[100_000, 10_000_000])
    g = sub.add_parser("gateway", help="the HTTP gateway: no-op ceiling, /feedback, /v1/batch, SDK")
    g.add_argument("--rounds", type=int, default=3)
    g.add_argument("--seconds", type=float, default=10.0)
    g.add_argument("--concurrency", type=int, default=32)
    g.add_argument("--sdk-events", type=int, default=100_000)
    w = sub.add_parser("worker", help="only (4), the worker end to end, --runs times")
    w.add_argument("--events", type=int, default=THROUGHPUT_EVENTS)
    w.add_argument("--runs", type=int, default=3)
    w.add_argument("--windows-in-flight", type=int, default=2, choices=(1, 2))
    w.add_argument("--max-window-events", type=int, default=50_000)
    st = sub.add_parser("statements", help="only the window writes, seconds per SQL statement")
    st.add_argument("--events", type=int, default=200_000)
    st.add_argument("--runs", type=int, default=2)
    st.add_argument("--max-window-events", type=int, default=50_000)
    n = sub.add_parser("notes", help="what noting for the read model costs a window's writes")
    n.add_argument("--events", type=int, default=250_000)
    n.add_argument("--runs", type=int, default=1)
    n.add_argument("--repeats", type=int, default=15)
    n.add_argument("--max-window-events", type=int, default=50_000)
    for p in (parser, t):
        p.add_argument("--events", type=int, default=THROUGHPUT_EVENTS)
        p.add_argument("--pending", type=int, default=1_000_000)
        p.add_argument("--latency-rate", type=int, default=3_000)
        p.add_argument("--latency-seconds", type=float, default=20.0)
    k = sub.add_parser("kinds", help="feedback/s by target kind with 100k vs millions stored")
    k.add_argument("--sizes", type=int, nargs="+", default=[100_000, 10_000_000])
    k.add_argument("--rounds", type=int, default=3)
    k.add_argument("--burst", type=int, default=target_kinds.BURST)
    k.add_argument(
        "--old", type=Path, help="a checkout of another commit, measured interleaved with this one"
    )
    h.add_argument("--predictions", type=int, default=10_000_000)
    h.add_argument("--quick", action="store_true", help="1M instead of 10M")
    h.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    command = args.command or "throughput"
    if command == "throughput":
        report.save("throughput", asyncio.run(throughput(args)))
    elif command == "history":
        report.save("history", asyncio.run(history_run(args)))
    elif command == "read-model":
        result = asyncio.run(read_model_run(args))
        report.save("read_model", result)
        print(read_model.table(result))
    elif command == "kinds":
        report.save(
            "kinds", asyncio.run(target_kinds.run(args.sizes, args.rounds, args.burst, args.old))
        )
    elif command == "gateway":
        result = asyncio.run(
            gateway_load(args.rounds, args.seconds, args.concurrency, args.sdk_events)
        )
        report.save("gateway", result)
        print(report.gateway_table(result))
    elif command == "worker":
        asyncio.run(worker_only(args))
        return
    elif command == "statements":
        asyncio.run(statements_only(args))
        return
    elif command == "notes":
        asyncio.run(notes_only(args))
        return
    _print_table(command)
    print(f"wrote {report.write_doc()}")


def _print_table(command: str) -> None:
    """The saved results of the set just measured, as the document shows them."""
    tables = {
        "throughput": report.throughput_table,
        "history": report.history_table,
        "kinds": report.kinds_table,
    }
    results = report.load(command)
    if results and command in tables:
        print(tables[command](results))


if __name__ == "__main__":
    main()
