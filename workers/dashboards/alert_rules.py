"""The Prometheus alert rules that go with the Pipeline health dashboard.

Each rule keeps, beside its expression, the *signals* it compares: the measured series without
the threshold.  On a healthy pipeline an alert's expression rightly returns nothing, so a test
could not tell a quiet alert from one reading a misspelt metric; its signals must return series
on any running pipeline, and a test asks a real Prometheus for each of them.  When each alert
fires is tested apart, with promtool's rule tests over made-up series.

Jobs are those of ``deploy/prometheus/prometheus.yml``; thresholds are starting points, to be
tuned to one's own traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORKER_JOB = "feedbackflow-worker"
GATEWAY_JOB = "feedbackflow-gateway"

# How many windows may pass without an offset commit while records wait (workers.health uses
# the same count for /health).
STUCK_AFTER_WINDOWS = 3


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    signals: tuple[str, ...]
    wait: str  # Prometheus' ``for``: how long the expression must hold before it fires
    severity: str
    summary: str
    description: str

    def as_rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.wait,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


_LAG = "feedbackflow_consumer_lag"
_LAG_SLOPE = f"deriv({_LAG}[30m])"

CONSUMER_LAG_GROWING = AlertRule(
    name="FeedbackflowConsumerLagGrowing",
    expr=f"{_LAG_SLOPE} > 0 and {_LAG} > 0",
    signals=(_LAG_SLOPE, _LAG),
    wait="30m",
    severity="warning",
    summary="Consumer lag of {{ $labels.topic }} [{{ $labels.partition }}] keeps growing",
    description=(
        "The worker {{ $labels.instance }} falls further behind on this partition, for half "
        "an hour now: add workers (up to the partition count) or look at the window write time."
    ),
)

# Seconds since the worker last committed offsets, or since it started if it has not yet (the
# commit time is 0 then; ``or`` matches label sets without the metric name, so the 0 is dropped
# first for the start time to take its place).
_SINCE_COMMIT = (
    "time() - max by (job, instance) "
    "(feedbackflow_last_commit_timestamp_seconds > 0 or process_start_time_seconds)"
)
_WINDOW = "max by (job, instance) (feedbackflow_window_seconds)"
_READ_LATELY = "sum by (job, instance) (increase(feedbackflow_events_consumed_total[1h]))"
_LAG_AT_COMMIT = f"max by (job, instance) ({_LAG})"

NO_OFFSET_COMMIT = AlertRule(
    name="FeedbackflowNoOffsetCommit",
    expr=(
        f"({_SINCE_COMMIT}) > on (job, instance) {STUCK_AFTER_WINDOWS} * {_WINDOW}\n"
        f"and on (job, instance) ({_READ_LATELY} > 0 or {_LAG_AT_COMMIT} > 0)"
    ),
    signals=(_SINCE_COMMIT, _WINDOW, _READ_LATELY, _LAG_AT_COMMIT),
    wait="5m",
    severity="critical",
    summary="No offset commit from {{ $labels.instance }} for "
    f"{STUCK_AFTER_WINDOWS} windows while records wait",
    description=(
        "Nothing has been written to Postgres and committed for {{ $value | humanizeDuration }} "
        "although the worker read records: its /health says why (Postgres or the broker away, "
        "a window failing)."
    ),
)

_DEAD = "feedbackflow_dead_letters_total"
_DEAD_COUNT = f"sum by (job, topic) (increase({_DEAD}[10m]))"
_DEAD_SHARE = (
    f"sum by (job, topic) (rate({_DEAD}[10m]))\n"
    "  / sum by (job, topic) (rate(feedbackflow_events_consumed_total[10m]))"
)

DEAD_LETTER_BURST = AlertRule(
    name="FeedbackflowDeadLetterBurst",
    # The share first: an alert's value is its left side, and the summary shows the share.
    expr=f"({_DEAD_SHARE}) > 0.01\nand {_DEAD_COUNT} > 10",
    signals=(_DEAD_SHARE, _DEAD_COUNT),
    wait="5m",
    severity="warning",
    summary="More than 1% of {{ $labels.topic }} goes to the dead letters",
    description=(
        "{{ $value | humanizePercentage }} of the events read in ten minutes were refused: "
        "a producer sends something the wire format or the metric config does not allow. "
        "The Pipeline health dashboard shows which field; the dead_letters table keeps the bytes."
    ),
)

_REQUESTS = "feedbackflow_gateway_requests_total"
# ``or ... * 0``: a route that answered no 5xx has a share of 0, not no series at all.
_SHARE_5XX = (
    f'(sum by (job, route) (rate({_REQUESTS}{{status=~"5.."}}[5m]))\n'
    f"  or sum by (job, route) (rate({_REQUESTS}[5m])) * 0)\n"
    f"/ sum by (job, route) (rate({_REQUESTS}[5m]))"
)

GATEWAY_5XX = AlertRule(
    name="FeedbackflowGateway5xx",
    expr=f"({_SHARE_5XX}) > 0.05",
    signals=(_SHARE_5XX,),
    wait="5m",
    severity="critical",
    summary="The gateway answers 5xx to {{ $value | humanizePercentage }} of {{ $labels.route }}",
    description=(
        "503 means the broker does not take events (clients retry after Retry-After); "
        "other 5xx are the gateway's own errors, in its log."
    ),
)

_UP = f'up{{job=~"{WORKER_JOB}|{GATEWAY_JOB}"}}'

TARGET_DOWN = AlertRule(
    name="FeedbackflowTargetDown",
    expr=f"{_UP} == 0",
    signals=(_UP,),
    wait="5m",
    severity="critical",
    summary="Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }}",
    description="The process is down or its /metrics does not answer.",
)

ALERT_RULES = (CONSUMER_LAG_GROWING, NO_OFFSET_COMMIT, DEAD_LETTER_BURST, GATEWAY_5XX, TARGET_DOWN)


def rule_file() -> dict[str, Any]:
    """The rule file's content, as Prometheus reads it (``rule_files``)."""
    return {"groups": [{"name": "feedbackflow", "rules": [rule.as_rule() for rule in ALERT_RULES]}]}
