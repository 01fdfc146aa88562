"""The Pipeline health dashboard: is the stream keeping up, and what does it refuse?

Rows follow an event's way: the gateway (requests by route and status, latency), the worker's
intake (events/s per topic, consumer lag per partition), its windows (size, write time, commits)
and what it rejects (dead letters by topic and field).  Every panel reads Prometheus; the
template variables pick the Prometheus datasource and the worker and gateway instances.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.models.common import LegendDisplayMode, StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

UID = "feedbackflow-pipeline-health"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Label filters every worker / gateway series gets: the instances the variables selected.
WORKER = 'instance=~"$worker"'
GATEWAY = 'instance=~"$gateway"'
# Grafana widens this to at least four scrape intervals, so a rate never lacks two samples.
RATE = "$__rate_interval"


def _query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).range()


def _panel(
    title: str, description: str, unit: str, *queries: prometheus.Dataquery
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(12)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.TABLE).show_legend(True))
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _instances(name: str, label: str, metric: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, instance)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def _quantiles(histogram: str, labels: str, by: str, legend: str) -> list[prometheus.Dataquery]:
    buckets = f"sum by ({by}) (rate({histogram}_bucket{{{labels}}}[{RATE}]))"
    return [
        _query(
            f"histogram_quantile({q}, {buckets})",
            f"{legend} p{round(q * 100)}",
            ref_id,
        )
        for q, ref_id in ((0.5, "A"), (0.99, "B"))
    ]


def gateway_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Gateway"))
        .with_panel(
            _panel(
                "Requests by route and status",
                "HTTP answers per second (feedbackflow_gateway_requests).",
                "reqps",
                _query(
                    "sum by (route, status) "
                    f"(rate(feedbackflow_gateway_requests_total{{{GATEWAY}}}[{RATE}]))",
                    "{{route}} {{status}}",
                ),
            ).stacking(StackingConfig().mode(StackingMode.NORMAL))
        )
        .with_panel(
            _panel(
                "Request latency by route",
                "Time from a request's arrival to its answer "
                "(feedbackflow_gateway_request_seconds).",
                "s",
                *_quantiles(
                    "feedbackflow_gateway_request_seconds", GATEWAY, "route, le", "{{route}}"
                ),
            )
        )
    )


def intake_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Worker intake"))
        .with_panel(
            _panel(
                "Events consumed per topic",
                "Messages read from the input topics, per second.",
                "ops",
                _query(
                    "sum by (topic) "
                    f"(rate(feedbackflow_events_consumed_total{{{WORKER}}}[{RATE}]))",
                    "{{topic}}",
                ),
            )
        )
        .with_panel(
            _panel(
                "Consumer lag per partition",
                "Messages between the last offset commit and the end of each input partition, "
                "as of the last fetch: it grows while a worker commits nothing.",
                "short",
                _query(
                    f"max by (topic, partition) (feedbackflow_consumer_lag{{{WORKER}}})",
                    "{{topic}} [{{partition}}]",
                ),
            )
        )
    )


def windows_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Windows"))
        .with_panel(
            _panel(
                "Window size",
                "Events per written window.",
                "short",
                *_quantiles("feedbackflow_window_events", WORKER, "le", "events"),
            )
        )
        .with_panel(
            _panel(
                "Window write time",
                "Time to write one window to Postgres, in one transaction.",
                "s",
                *_quantiles("feedbackflow_window_write_seconds", WORKER, "le", "write"),
            )
        )
        .with_panel(
            _panel(
                "Read model apply time",
                "Time to fold the committed windows' notes into the read model's rollups, "
                "right after they commit: how far the Feedback dashboard trails the windows.",
                "s",
                *_quantiles("feedbackflow_read_model_apply_seconds", WORKER, "le", "apply"),
            )
        )
        .with_panel(
            _panel(
                "Windows by outcome",
                "Windows written, retried, split, failed, abandoned, and commits refused or "
                "failed, per second.",
                "ops",
                _query(
                    f"sum by (outcome) (rate(feedbackflow_windows_total{{{WORKER}}}[{RATE}]))",
                    "{{outcome}}",
                ),
            )
        )
        .with_panel(
            _panel(
                "Time since the last offset commit",
                "Offsets are committed after a window's transaction; a line climbing past a few "
                "windows while events arrive means the worker is stuck.",
                "s",
                _query(
                    f"time() - max by (instance) "
                    f"(feedbackflow_last_commit_timestamp_seconds{{{WORKER}}})",
                    "{{instance}}",
                ),
            )
        )
    )


def dead_letters_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return board.with_row(dashboard.Row("Dead letters")).with_panel(
        _panel(
            "Dead letters by topic and field",
            "Messages rejected to the dead-letter table and topic, per second, by the field "
            "they were refused for ((payload) for bad JSON, (event) for a bad whole).",
            "ops",
            _query(
                "sum by (topic, field) "
                f"(rate(feedbackflow_dead_letters_total{{{WORKER}}}[{RATE}]))",
                "{{topic}} {{field}}",
            ),
        ).span(24)
    )


def pipeline_health() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("feedbackflow: Pipeline health")
        .uid(UID)
        .tags(["feedbackflow"])
        .description("Gateway, worker intake, windows and dead letters, from Prometheus.")
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
        .with_variable(_instances("worker", "Worker", "feedbackflow_events_consumed_total"))
        .with_variable(_instances("gateway", "Gateway", "feedbackflow_gateway_requests_total"))
    )
    for row in (gateway_row, intake_row, windows_row, dead_letters_row):
        board = row(board)
    return board
