"""The alert rules under promtool (Debian's prometheus package): the file passes
``promtool check rules``, and each alert fires on made-up series showing its trouble and stays
quiet on series of a healthy, an idle or a just-started pipeline (``promtool test rules``).

That each rule reads series a real worker and gateway export is tested apart, against a real
Prometheus (test_dashboards_in_prometheus.py).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from workers.dashboards.build import RULES_DIR, RULES_FILE

RULES = RULES_DIR / RULES_FILE
WORKER = 'job="feedbackflow-worker",instance="worker:8000"'
GATEWAY = 'job="feedbackflow-gateway",instance="api:8080"'
FEEDBACK = 'topic="ff.feedback"'


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make test` installs it (deploy/dev/ensure-prometheus)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_the_rule_file_passes_promtool_check() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout


@dataclass(frozen=True)
class Case:
    """Series sampled every minute (promtool's notation: ``a+bxn`` is n steps from a by b), and
    the alerts firing ``at`` minutes in."""

    name: str
    series: dict[str, str]
    at: int
    firing: set[str] = field(default_factory=set)


CASES = [
    Case(
        "lag growing for an hour",
        {f'feedbackflow_consumer_lag{{{WORKER},{FEEDBACK},partition="0"}}': "0+100x120"},
        at=100,
        firing={"FeedbackflowConsumerLagGrowing"},
    ),
    Case(
        "lag high but steady",
        {f'feedbackflow_consumer_lag{{{WORKER},{FEEDBACK},partition="0"}}': "5000x120"},
        at=100,
    ),
    Case(
        "records read, last commit half an hour ago",
        {
            f"feedbackflow_last_commit_timestamp_seconds{{{WORKER}}}": "60x60",
            f"process_start_time_seconds{{{WORKER}}}": "0x60",
            f"feedbackflow_window_seconds{{{WORKER}}}": "300x60",
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "0+10x60",
        },
        at=30,
        firing={"FeedbackflowNoOffsetCommit"},
    ),
    Case(
        "records read, never committed since the start half an hour ago",
        {
            f"feedbackflow_last_commit_timestamp_seconds{{{WORKER}}}": "0x60",
            f"process_start_time_seconds{{{WORKER}}}": "0x60",
            f"feedbackflow_window_seconds{{{WORKER}}}": "300x60",
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "0+10x60",
        },
        at=30,
        firing={"FeedbackflowNoOffsetCommit"},
    ),
    Case(
        "records read, committed every minute",
        {
            f"feedbackflow_last_commit_timestamp_seconds{{{WORKER}}}": "0+60x60",
            f"process_start_time_seconds{{{WORKER}}}": "0x60",
            f"feedbackflow_window_seconds{{{WORKER}}}": "300x60",
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "0+10x60",
        },
        at=30,
    ),
    Case(
        "idle for hours: no commit, nothing read, nothing waiting",
        {
            f"feedbackflow_last_commit_timestamp_seconds{{{WORKER}}}": "60x240",
            f"process_start_time_seconds{{{WORKER}}}": "0x240",
            f"feedbackflow_window_seconds{{{WORKER}}}": "300x240",
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "100x240",
            f'feedbackflow_consumer_lag{{{WORKER},{FEEDBACK},partition="0"}}': "0x240",
        },
        at=200,
    ),
    Case(
        "started eight minutes ago, nothing committed yet",
        {
            # No series before the start, 50 minutes in ("_" is a missing sample).
            f"feedbackflow_last_commit_timestamp_seconds{{{WORKER}}}": "_x50 0x10",
            f"process_start_time_seconds{{{WORKER}}}": "_x50 3000x10",
            f"feedbackflow_window_seconds{{{WORKER}}}": "_x50 300x10",
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "_x50 0+10x10",
        },
        at=58,
    ),
    Case(
        "a tenth of the feedback refused",
        {
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "0+1000x60",
            f'feedbackflow_dead_letters_total{{{WORKER},{FEEDBACK},field="value"}}': "0+100x60",
        },
        at=30,
        firing={"FeedbackflowDeadLetterBurst"},
    ),
    Case(
        "one in a thousand refused",
        {
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "0+1000x60",
            f'feedbackflow_dead_letters_total{{{WORKER},{FEEDBACK},field="value"}}': "0+1x60",
        },
        at=30,
    ),
    Case(
        "a tenth refused, but only a handful",
        {
            f"feedbackflow_events_consumed_total{{{WORKER},{FEEDBACK}}}": "0+5x60",
            f'feedbackflow_dead_letters_total{{{WORKER},{FEEDBACK},field="value"}}': "0+0.5x60",
        },
        at=30,
    ),
    Case(
        "the gateway answers 503 to a sixth of its feedback",
        {
            f'feedbackflow_gateway_requests_total{{{GATEWAY},route="/v1/feedback",status="202"}}': (
                "0+100x60"
            ),
            f'feedbackflow_gateway_requests_total{{{GATEWAY},route="/v1/feedback",status="503"}}': (
                "0+20x60"
            ),
        },
        at=30,
        firing={"FeedbackflowGateway5xx"},
    ),
    Case(
        "the gateway answers 2xx and 4xx only",
        {
            f'feedbackflow_gateway_requests_total{{{GATEWAY},route="/v1/feedback",status="202"}}': (
                "0+100x60"
            ),
            f'feedbackflow_gateway_requests_total{{{GATEWAY},route="/v1/feedback",status="400"}}': (
                "0+50x60"
            ),
        },
        at=30,
    ),
    Case(
        "the worker cannot be scraped",
        {f"up{{{WORKER}}}": "0x20", f"up{{{GATEWAY}}}": "1x20"},
        at=10,
        firing={"FeedbackflowTargetDown"},
    ),
    Case("both scraped", {f"up{{{WORKER}}}": "1x20", f"up{{{GATEWAY}}}": "1x20"}, at=10),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_alert_fires_on_its_trouble_and_only_then(case: Case, tmp_path: Path) -> None:
    firing = 'count by (alertname) (ALERTS{alertstate="firing"})'
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "promql_expr_test": [
                    {
                        "expr": firing,
                        "eval_time": f"{case.at}m",
                        "exp_samples": [
                            {"labels": f'{{alertname="{name}"}}', "value": 1}
                            for name in sorted(case.firing)
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(test), encoding="utf-8")
    tested = promtool("test", "rules", str(test_file))
    assert tested.returncode == 0, tested.stdout + tested.stderr
