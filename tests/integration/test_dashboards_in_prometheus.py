"""Every PromQL expression of the dashboards and alert rules, asked of a real Prometheus (Debian's
package) that scrapes a real worker process and gateway after real traffic, with the shipped
deploy/prometheus/prometheus.yml (its jobs, its rule files): each panel's query and each alert's
signals return series with numbers, each template variable has values, each alert expression
evaluates, and Prometheus loads and evaluates every rule without an error.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from ingest.topics import TopicNames
from tests.integration.gateway import bearer, new_key, running_gateway, with_gateway
from tests.integration.harness import (
    PROCESS_CONFIG,
    metric_registry,
    process_settings,
    producer,
    start_worker_process,
    wait_for_count,
    wait_until,
)
from tests.integration.prometheus import api, instant, running_prometheus, shipped_config
from workers.dashboards.alert_rules import ALERT_RULES, GATEWAY_JOB, WORKER_JOB
from workers.dashboards.build import DASHBOARD_DIR, DASHBOARDS
from workers.devstack.servers import TansuBroker

PREDICTIONS = 20
# What Grafana puts for $__rate_interval: wide enough to span the test's traffic.
RATE_INTERVAL = "2m"
LABEL_VALUES = re.compile(r"label_values\((\w+),\s*(\w+)\)")


def boards() -> list[dict[str, Any]]:
    """The dashboards that read Prometheus (the Feedback dashboard's SQL panels are run against
    Postgres by test_feedback_dashboard.py)."""
    loaded = [json.loads((DASHBOARD_DIR / n).read_text(encoding="utf-8")) for n in DASHBOARDS]
    prometheus = [
        b for b in loaded if any("expr" in t for p in b["panels"] for t in p.get("targets", []))
    ]
    assert prometheus, "no dashboard reads Prometheus"
    return prometheus


def variable_values(port: int, board: dict[str, Any]) -> dict[str, list[str]]:
    """Each query variable's values, as Grafana asks for them (``label_values``)."""
    values = {}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.fullmatch(variable["query"])
            assert match, variable["query"]
            metric, label = match.groups()
            values[variable["name"]] = api(port, f"label/{label}/values", **{"match[]": metric})
    return values


def as_grafana_sends(expression: str, values: dict[str, list[str]]) -> str:
    """``expression`` with the variables replaced: each variable's first value, as picked."""
    expression = expression.replace("$__rate_interval", RATE_INTERVAL)
    for name, options in values.items():
        expression = expression.replace(f"${name}", options[0] if options else "(none)")
    assert "$" not in expression, expression
    return expression


def with_numbers(port: int, expression: str) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in instant(port, expression))


def every_expression(port: int) -> dict[str, bool]:
    """Each expression that must answer with numbers, and whether it does."""
    answers: dict[str, bool] = {}
    for board in boards():
        values = variable_values(port, board)
        for name, options in values.items():
            answers[f"variable ${name}"] = bool(options)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expression = as_grafana_sends(target["expr"], values)
                answers[f"{panel['title']}: {expression}"] = with_numbers(port, expression)
    for rule in ALERT_RULES:
        instant(port, rule.expr)  # evaluates (firing or not), or raises naming the error
        for signal in rule.signals:
            answers[f"{rule.name} signal: {signal}"] = with_numbers(port, signal)
    return answers


def scraped_at_rest(port: int) -> bool:
    """Both targets scraped, and the worker's per-topic counters already there at 0: a counter
    that first appears at its first value loses that increment to rate()."""
    up = instant(port, "up == 1")
    consumed_at_zero = instant(port, "feedbackflow_events_consumed_total == 0")
    return len(up) == 2 and len(consumed_at_zero) == 2


def rules_evaluated(port: int) -> dict[str, str]:
    """Each loaded rule's health: ``ok`` once Prometheus has evaluated it without an error."""
    groups = api(port, "rules")["groups"]
    return {r["name"]: r["health"] + r.get("lastError", "") for g in groups for r in g["rules"]}


async def test_every_panel_and_alert_expression_returns_series_from_a_running_pipeline(
    kafka: TansuBroker,
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    settings = with_gateway(await process_settings(kafka.bootstrap, database_url))
    config = tmp_path / "feedbackflow.toml"
    config.write_text(PROCESS_CONFIG)
    worker_processes.append(start_worker_process(settings, config, tmp_path / "worker.log"))
    key = await new_key(database_url, "predictions", "feedback")
    ports = {WORKER_JOB: settings.http_port, GATEWAY_JOB: settings.gateway.port}
    async with (
        running_gateway(settings, metric_registry()) as url,
        httpx.AsyncClient(base_url=url, headers=bearer(key), timeout=30) as http,
        running_prometheus(shipped_config(ports), tmp_path) as prometheus_port,
    ):
        await wait_until(
            lambda: asyncio.to_thread(scraped_at_rest, prometheus_port),
            within=60,
            what="Prometheus to scrape the worker and gateway before any traffic",
        )
        for _ in range(PREDICTIONS):
            answer = await http.post("/v1/predictions", json={"application": "generate_haiku"})
            assert answer.status_code == 202, answer.text
            prediction_id = answer.json()["prediction_id"]
            feedback = {"metric": "haiku_rating", "value": True, "prediction_id": prediction_id}
            answer = await http.post("/v1/feedback", json=feedback)
            assert answer.status_code == 202, answer.text
        refused = await http.post("/v1/feedback", json={"metric": "haiku_rating"})
        assert refused.status_code == 400, refused.text
        async with producer(settings) as ff:  # a dead letter: not JSON at all
            await ff.send_raw(TopicNames(settings.topic_prefix).feedback, b"k", b"not json")
            await ff.flush()
        await wait_for_count(
            db,
            "SELECT count(*) FROM feedbackflow.feedback WHERE status = 'joined'",
            PREDICTIONS,
            within=60,
        )
        await _every_expression_answers(prometheus_port)


async def _every_expression_answers(port: int) -> None:
    answers: dict[str, bool] = {}
    health: dict[str, str] = {}

    async def answered() -> bool:
        answers.update(await asyncio.to_thread(every_expression, port))
        health.update(await asyncio.to_thread(rules_evaluated, port))
        return all(answers.values()) and all(h == "ok" for h in health.values())

    try:
        await wait_until(answered, within=90, what="every expression to return series")
    except AssertionError as exc:
        empty = [e for e, ok in answers.items() if not ok]
        raise AssertionError(f"{exc}; without numbers: {empty}; rules: {health}") from None
    assert set(health) == {rule.name for rule in ALERT_RULES}
    assert len(answers) >= 20
