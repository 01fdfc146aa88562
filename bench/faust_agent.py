"""(3) The naive faust-streaming agent: ``async for value in stream``, one event at a time.

This is the design the worker replaced.  The agent does only what the consume ceiling does
(``model_validate_json`` per message) and writes nothing, so its rate is an *upper bound* for any
naive agent that would also insert each event into Postgres.

Run as a subprocess (``python -m bench.faust_agent worker -l warn``) because faust's worker
owns its event loop and process lifecycle; it prints one ``RESULT {json}`` line and exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ceilings import Throughput
from ingest.topics import TopicNames

ENV_BROKER = "FFBENCH_BROKER"
ENV_PREFIX = "FFBENCH_TOPIC_PREFIX"
ENV_EVENTS = "FFBENCH_EVENTS"
ENV_APP_ID = "FFBENCH_APP_ID"
ENV_DATADIR = "FFBENCH_DATADIR"


@dataclass(frozen=True)
class FaustResult:
    throughput: Throughput
    cpu_percent: float


def run_faust_agent(
    bootstrap: str, topics: TopicNames, expected: int, log: Path, timeout: float = 300.0
) -> FaustResult:
    """Start the agent in its own process; time from its first event to its ``expected``-th."""
    env = {
        **os.environ,
        ENV_BROKER: bootstrap,
        ENV_PREFIX: topics.prefix,
        ENV_EVENTS: str(expected),
        ENV_APP_ID: f"ffbench-faust-{uuid.uuid4().hex[:8]}",
        ENV_DATADIR: str(log.parent / "faust-data"),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.faust_agent", "worker", "-l", "warn"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError(f"faust agent did not finish in {timeout}s; see {log}") from None
    for line in log.read_text(errors="replace").splitlines():
        if "RESULT " in line:  # faust routes stdout through its logger: find it in the line
            result = json.loads(line.split("RESULT ", 1)[1])
            return FaustResult(
                Throughput(int(result["events"]), float(result["seconds"])),
                float(result["cpu_percent"]),
            )
    raise RuntimeError(f"faust agent printed no result; see {log}")


def _build_app() -> Any:
    import faust

    from ingest.wire.events import Feedback, Prediction

    topics = TopicNames(os.environ[ENV_PREFIX])
    expected = int(os.environ[ENV_EVENTS])
    app = faust.App(
        os.environ[ENV_APP_ID],
        broker=f"kafka://{os.environ[ENV_BROKER]}",
        store="memory://",
        datadir=os.environ[ENV_DATADIR],
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=6.0,
        consumer_auto_offset_reset="earliest",
    )
    channel = app.topic(*topics.inputs, value_serializer="raw")
    state = {"n": 0, "t0": 0.0, "cpu0": 0.0}

    @app.agent(channel)
    async def naive(stream: Any) -> None:
        async for value in stream:
            if not state["n"]:
                state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
            topic = stream.current_event.message.topic
            (Feedback if topic == topics.feedback else Prediction).model_validate_json(value)
            state["n"] += 1
            if state["n"] >= expected:
                seconds = time.perf_counter() - state["t0"]
                cpu = time.process_time() - state["cpu0"]
                line = {
                    "events": state["n"],
                    "seconds": seconds,
                    "cpu_percent": 100 * cpu / seconds,
                }
                print("RESULT " + json.dumps(line), flush=True)
                os._exit(0)

    return app


if __name__ == "__main__":
    _build_app().main()
