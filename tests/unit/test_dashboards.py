"""The dashboards and alert rules as code: the committed files are what the code builds, the
check fails on a stale one, and every metric they read is one the worker or gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from ingest.gateway.telemetry import GatewayTelemetry
from workers.dashboards import build
from workers.dashboards.alert_rules import ALERT_RULES
from workers.telemetry import WorkerTelemetry

SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def exported_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in SAMPLE_SUFFIXES.get(family.type, ("",)))
    return names


def read_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(?:feedbackflow|process)_[a-z_]+\b", expression))


def panel_expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def committed_board(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((build.DASHBOARD_DIR / name).read_text(encoding="utf-8"))
    return loaded


def test_the_committed_files_are_what_the_code_builds() -> None:
    rendered = build.rendered_files()
    assert {p.relative_to(build.DEPLOY_DIR).as_posix() for p in rendered} == {
        "grafana/dashboards/feedback.json",
        "grafana/dashboards/pipeline-health.json",
        "prometheus/rules/feedbackflow.yml",
    }
    for path, text in rendered.items():
        assert path.read_text(encoding="utf-8") == text, f"{path} stale: `feedbackflow dashboards`"


def test_the_check_names_a_stale_file_and_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build, "DEPLOY_DIR", tmp_path)
    monkeypatch.setattr(build, "DASHBOARD_DIR", tmp_path / "grafana" / "dashboards")
    monkeypatch.setattr(build, "RULES_DIR", tmp_path / "prometheus" / "rules")
    assert build.write_dashboards(check=True) == 1  # nothing written yet
    assert build.write_dashboards() == 0
    assert build.write_dashboards(check=True) == 0
    stale = tmp_path / "grafana" / "dashboards" / "pipeline-health.json"
    stale.write_text("{}", encoding="utf-8")
    capsys.readouterr()
    assert build.write_dashboards(check=True) == 1
    assert "grafana/dashboards/pipeline-health.json" in capsys.readouterr().err
    assert stale.read_text(encoding="utf-8") == "{}"


def test_every_metric_the_dashboards_and_rules_read_is_exported() -> None:
    exported = exported_names(WorkerTelemetry().registry) | exported_names(
        GatewayTelemetry().registry
    )
    expressions = panel_expressions(committed_board("pipeline-health.json"))
    expressions += [rule.expr for rule in ALERT_RULES]
    read = set().union(*map(read_names, expressions))
    assert read - exported == set()
    assert {"feedbackflow_consumer_lag", "feedbackflow_gateway_requests_total"} <= read


def test_every_panel_reads_the_chosen_prometheus_and_instances() -> None:
    board = committed_board("pipeline-health.json")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "worker", "gateway"}
    assert [p["id"] for p in board["panels"]] == list(range(1, len(board["panels"]) + 1))
    assert all(v["current"]["value"] == "$__all" for v in variables.values() if v["multi"])
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["title"] for p in panels}) == len(panels) >= 8
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert re.search(r'instance=~"\$(worker|gateway)"', target["expr"]), target["expr"]


def test_the_rule_file_holds_every_alert_with_its_severity() -> None:
    text = (build.RULES_DIR / build.RULES_FILE).read_text(encoding="utf-8")
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [a.name for a in ALERT_RULES]
    assert all(r["labels"]["severity"] in {"warning", "critical"} for r in rules)
    assert all(a.signals for a in ALERT_RULES)


def test_outside_a_checkout_the_command_says_so_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build, "DEPLOY_DIR", tmp_path / "deploy")
    assert build.write_dashboards() == 2
    assert "from a checkout" in capsys.readouterr().err
    assert not (tmp_path / "deploy").exists()
