"""The Feedback dashboard: what users said about the models, from the read model in Postgres.

Every panel is one query of ``workers.read_model.queries`` as Grafana sends it
(``Query.for_grafana``), narrowed to the columns its panel draws: the dashboards, the report and
the tests read the same SQL, so a panel cannot drift from what the tests check.  The queries
read rollups at the grain the range calls for, so a panel over 90 days costs about what one
over an hour does (docs/performance.md).  The data source logs in as a member of
``feedbackflow_reader`` (deploy/grafana/provisioning/datasources).

Grafana turns a time series query's text columns into labels (``metric``, ``model``), so each
series is named from its labels by ``display_name``.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.models.common import GraphDrawStyle, LegendDisplayMode, StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from workers.dashboards.sql_query import SqlQuery
from workers.read_model import queries
from workers.read_model.queries import Query

UID = "feedbackflow-feedback"
DATASOURCE = DataSourceRef(type_val="grafana-postgresql-datasource", uid="feedbackflow-postgres")
# The comments table shows this many rows (the query's :limit).
LATEST_ROWS = 20
SOURCE_TYPES = ("llm_judge", "human", "code", "end_user")


def panel_sql(query: Query, columns: str, where: str = "", order: str = "1") -> str:
    """``query`` as Grafana sends it, narrowed to ``columns`` (and rows ``where``); a time
    series in time order, as Grafana wants it to turn labelled rows into series."""
    inner = query.for_grafana({"limit": str(LATEST_ROWS)}).strip()
    condition = f"\nWHERE {where}" if where else ""
    return f"SELECT {columns}\nFROM (\n{inner}\n) q{condition}\nORDER BY {order}"


def _series(title: str, description: str, unit: str, sql: str, legend: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(SqlQuery(sql, DATASOURCE))
        .unit(unit)
        .display_name(legend)
        .height(8)
        .span(12)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.TABLE).show_legend(True))
    )


def _table(title: str, description: str, sql: str, span: int = 12) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(SqlQuery(sql, DATASOURCE).table())
        .height(8)
        .span(span)
    )


METRIC = "${__field.labels.metric}"
METRIC_MODEL = "${__field.labels.metric} ${__field.labels.model}"
METRIC_FIELD = "${__field.labels.metric} ${__field.name}"


def values_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Feedback"))
        .with_panel(
            _series(
                "Feedback per metric",
                "Current feedback per bucket of feedback time (revisions replace what they "
                "supersede; retractions withdraw), every status.",
                "short",
                panel_sql(queries.FEEDBACK_VOLUME, "time, metric, feedback_count"),
                METRIC,
            )
            .draw_style(GraphDrawStyle.BARS)
            .fill_opacity(60)
            .stacking(StackingConfig().mode(StackingMode.NORMAL))
        )
        .with_panel(
            _series(
                "Share positive per model",
                "Boolean metrics: the share of joined, current feedback that is true.",
                "percentunit",
                panel_sql(
                    queries.METRIC_VALUES,
                    "time, metric, model, value",
                    "metric_type = 'boolean'",
                ),
                METRIC_MODEL,
            )
            .min(0)
            .max(1)
        )
        .with_panel(
            _series(
                "Mean value per model",
                "Float metrics (ratings, scores): the mean of joined, current feedback.",
                "short",
                panel_sql(
                    queries.METRIC_VALUES, "time, metric, model, value", "metric_type = 'float'"
                ),
                METRIC_MODEL,
            )
        )
        .with_panel(
            _table(
                "Categories",
                "Categorical metrics over the range: current feedback per category.",
                panel_sql(
                    queries.CATEGORY_DISTRIBUTION,
                    "metric, category, feedback_count, share",
                    order="metric, feedback_count DESC, category",
                ),
            )
        )
    )


def delay_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Delay and coverage"))
        .with_panel(
            _series(
                "Feedback delay",
                "Time from prediction to feedback, p50/p90/p99 of joined feedback per bucket "
                "of feedback time, read from histogram counts.",
                "s",
                panel_sql(
                    queries.DELAY_PERCENTILES_OVER_TIME,
                    "time, metric, p50_seconds AS p50, p90_seconds AS p90, p99_seconds AS p99",
                ),
                METRIC_FIELD,
            )
        )
        .with_panel(
            _table(
                "Feedback delay over the range",
                "Joined feedback per metric and its delay percentiles over the whole range.",
                panel_sql(
                    queries.DELAY_PERCENTILES,
                    "metric, joined_count, p50_seconds, p90_seconds, p99_seconds",
                ),
            )
        )
        .with_panel(
            _series(
                "Coverage per model",
                "The share of predictions that received joined feedback, per bucket of "
                "prediction time.",
                "percentunit",
                panel_sql(queries.COVERAGE, "time, application, model, coverage"),
                "${__field.labels.application} ${__field.labels.model}",
            )
            .min(0)
            .max(1)
        )
        .with_panel(
            _series(
                "Pending and expired",
                "Feedback still waiting for its prediction, and feedback expired past "
                "retention, per bucket of feedback time.",
                "short",
                panel_sql(
                    queries.BACKLOG,
                    "time, metric, pending_count AS pending, expired_count AS expired",
                ),
                METRIC_FIELD,
            )
        )
    )


def agreement_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Agreement"))
        .with_panel(
            _series(
                "Cohen's kappa: $source_type_a against $source_type_b",
                "Boolean and categorical metrics, over the items both source types rated: "
                "1 is full agreement, 0 what chance alone gives.",
                "short",
                panel_sql(queries.COHEN_KAPPA, "time, metric, kappa"),
                METRIC,
            )
            .min(-1)
            .max(1)
        )
        .with_panel(
            _series(
                "Fleiss' kappa across annotators",
                "Boolean and categorical metrics, over the items two sources or more rated.",
                "short",
                panel_sql(queries.FLEISS_KAPPA, "time, metric, kappa"),
                METRIC,
            )
            .min(-1)
            .max(1)
        )
        .with_panel(
            _table(
                "Items compared",
                "Per bucket and metric: the items both source types rated and how often they "
                "agreed.",
                panel_sql(
                    queries.COHEN_KAPPA,
                    "time, metric, items, observed_agreement, kappa",
                ),
                span=24,
            )
        )
    )


def comments_row(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return board.with_row(dashboard.Row("Comments and demonstrations")).with_panel(
        _table(
            "Latest comments and demonstrations",
            f"The newest {LATEST_ROWS} in the range, with the prediction they are about.",
            panel_sql(
                queries.LATEST_COMMENTS,
                "time, metric, model, value_text, value_json, rationale, source_type, "
                "source_id, inputs, outputs",
                order="time DESC, feedback_id DESC",
            ),
            span=24,
        )
    )


def _listed(name: str, label: str, column: str) -> dashboard.QueryVariable:
    """Values of ``column`` among the day rollups in the range: cheap at any history."""
    sql = (
        f"SELECT DISTINCT {column} FROM feedbackflow.feedback_rollup "
        "WHERE grain = '1d' AND bucket >= date_trunc('day', $__timeFrom()::timestamptz) "
        f"AND bucket < $__timeTo()::timestamptz AND {column} IS NOT NULL ORDER BY 1"
    )
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(sql)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(queries.ALL_VALUES)
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def _source_type(name: str, label: str, chosen: str) -> dashboard.CustomVariable:
    return (
        dashboard.CustomVariable(name)
        .label(label)
        .values(",".join(SOURCE_TYPES))
        .current(VariableOption(selected=True, text=chosen, value=chosen))
    )


def feedback() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("feedbackflow: Feedback")
        .uid(UID)
        .tags(["feedbackflow"])
        .description(
            "Feedback joined to predictions: values per model, categories, delay, coverage, "
            "backlog, agreement and the latest comments, from the read model."
        )
        .refresh("1m")
        .time("now-7d", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(_listed("application", "Application", "application"))
        .with_variable(_listed("metric", "Metric", "metric"))
        .with_variable(_listed("model", "Model", "model"))
        .with_variable(_source_type("source_type_a", "Source type A", "llm_judge"))
        .with_variable(_source_type("source_type_b", "Source type B", "human"))
    )
    for row in (values_row, delay_row, agreement_row, comments_row):
        board = row(board)
    return board
