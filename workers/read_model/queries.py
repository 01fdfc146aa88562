"""The read model's queries: each defined once as SQL with named parameters, run two ways.

The dashboards (Grafana SQL panels), the PNG report, export and the demo's check read the same
queries.  A query is SQL text with ``:name`` parameters (``Query``); ``Query.for_asyncpg`` turns
them into ``$1..$n`` for the typed functions below (each returns frozen dataclasses whose fields
are the query's columns), and ``Query.for_grafana`` into Grafana's macros and variables
(``$__timeFrom()``, ``${application:sqlstring}`` ...), the grain following the panel's range.

Every query reads the rollups of migration 0006 (docs/architecture.md, "Read model") at the grain
its range calls for (``feedbackflow.read_model_grain``: five-minute buckets up to a day, hours
up to two weeks, days beyond), bounded by the range; ``latest_comments`` reads feedback itself,
by its time (partition pruning) and a LIMIT.  A filter left at ``None`` keeps everything; a
filter on applications or models leaves out pending feedback, whose application and model are
not known yet.  Timings at 100k and 10M feedback are in docs/performance.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal, TypeVar

import asyncpg

Grain = Literal["5m", "1h", "1d"]

_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)\b")

# How Grafana spells each parameter: its time range, its dashboard variables, and the grain left
# to the range.  A filter variable's "All" is the custom value NULL, which Grafana inserts as it
# is (it formats only the values chosen): ARRAY[NULL] becomes NULL, "keep everything", so that
# All keeps pending feedback too, whose application and model are not known yet.
ALL_VALUES = "NULL"  # a filter variable's custom "All" value
GRAFANA_PARAMETERS: Mapping[str, str] = {
    "time_from": "$__timeFrom()",
    "time_to": "$__timeTo()",
    "grain": "NULL",
    "applications": "NULLIF(ARRAY[${application:sqlstring}]::text[], ARRAY[NULL]::text[])",
    "models": "NULLIF(ARRAY[${model:sqlstring}]::text[], ARRAY[NULL]::text[])",
    "metrics": "NULLIF(ARRAY[${metric:sqlstring}]::text[], ARRAY[NULL]::text[])",
    "source_type_a": "${source_type_a:sqlstring}",
    "source_type_b": "${source_type_b:sqlstring}",
    "limit": "${limit:raw}",
}


@dataclass(frozen=True)
class Query:
    """One query: a name and its SQL with ``:name`` parameters."""

    name: str
    sql: str

    @property
    def parameters(self) -> tuple[str, ...]:
        """Parameter names in order of first appearance: $1, $2 ... for asyncpg."""
        return tuple(dict.fromkeys(_PARAMETER.findall(self.sql)))

    def for_asyncpg(self) -> str:
        numbers = {name: i for i, name in enumerate(self.parameters, 1)}
        return _PARAMETER.sub(lambda m: f"${numbers[m.group(1)]}", self.sql)

    def for_grafana(self, overrides: Mapping[str, str] | None = None) -> str:
        """The SQL for a Grafana panel; ``overrides`` replaces how a parameter is spelled (a
        constant limit, a variable of another name)."""
        spelled = {**GRAFANA_PARAMETERS, **(overrides or {})}
        missing = [name for name in self.parameters if name not in spelled]
        if missing:
            raise ValueError(f"query {self.name!r}: no Grafana spelling for {missing}")
        return _PARAMETER.sub(lambda m: spelled[m.group(1)], self.sql)


# The grain a range reads (or the one asked for), and a rollup's rows within the range.
_GRAIN = (
    "coalesce(:grain::text,"
    " feedbackflow.read_model_grain(:time_from::timestamptz, :time_to::timestamptz))"
)


def _in_range(alias: str) -> str:
    return (
        f"{alias}.grain = {_GRAIN}"
        f" AND {alias}.bucket >= feedbackflow.read_model_bucket({_GRAIN}, :time_from::timestamptz)"
        f" AND {alias}.bucket < :time_to::timestamptz"
    )


def _among(column: str, parameter: str) -> str:
    """``column`` among the parameter's values, or anything when it is NULL."""
    return f"(:{parameter}::text[] IS NULL OR {column} = ANY(:{parameter}::text[]))"


def _counted(status: str) -> str:
    """The feedback of one status, as the column ``<status>_count``."""
    return (
        f"coalesce(sum(r.feedback_count) FILTER (WHERE r.status = '{status}'), 0)::bigint"
        f" AS {status}_count"
    )


FEEDBACK_VOLUME = Query(
    "feedback_volume",
    f"""
SELECT r.bucket AS time, r.metric,
       sum(r.feedback_count)::bigint AS feedback_count,
       {_counted("joined")},
       {_counted("pending")},
       {_counted("expired")},
       sum(r.error_count)::bigint AS error_count
FROM feedbackflow.feedback_rollup r
WHERE {_in_range("r")} AND {_among("r.application", "applications")}
  AND {_among("r.metric", "metrics")}
GROUP BY 1, 2
HAVING sum(r.feedback_count) <> 0
ORDER BY 1, 2
""",
)

METRIC_VALUES = Query(
    "metric_values",
    f"""
SELECT time, metric, metric_type, application, model, value_count,
       (CASE metric_type WHEN 'boolean' THEN positives / value_count
                         ELSE total / value_count END)::double precision AS value,
       (CASE WHEN metric_type = 'float' AND value_count > 1
             THEN sqrt(greatest(squares - total * total / value_count, 0) / (value_count - 1))
        END)::double precision AS stddev
FROM (
    SELECT r.bucket AS time, r.metric, r.metric_type, r.application, r.model,
           CASE r.metric_type WHEN 'boolean' THEN sum(r.boolean_count)
                              ELSE sum(r.value_count) END::bigint AS value_count,
           sum(r.positive_count) AS positives, sum(r.value_sum) AS total,
           sum(r.value_sum_squares) AS squares
    FROM feedbackflow.feedback_rollup r
    WHERE {_in_range("r")} AND r.status = 'joined' AND r.metric_type IN ('boolean', 'float')
      AND {_among("r.application", "applications")} AND {_among("r.model", "models")}
      AND {_among("r.metric", "metrics")}
    GROUP BY 1, 2, 3, 4, 5
) s
WHERE value_count > 0
ORDER BY 1, 2, 4, 5
""",
)

CATEGORY_DISTRIBUTION = Query(
    "category_distribution",
    f"""
SELECT metric, category, feedback_count,
       (feedback_count::numeric / sum(feedback_count) OVER (PARTITION BY metric))::double precision
           AS share
FROM (
    SELECT r.metric, r.category, sum(r.feedback_count)::bigint AS feedback_count
    FROM feedbackflow.feedback_category_rollup r
    WHERE {_in_range("r")} AND {_among("r.application", "applications")}
      AND {_among("r.model", "models")} AND {_among("r.metric", "metrics")}
    GROUP BY 1, 2
    HAVING sum(r.feedback_count) > 0
) c
ORDER BY 1, 3 DESC, 2
""",
)


def _delay_bins(by_time: bool) -> str:
    time = "r.bucket AS time, " if by_time else ""
    group = "1, 2, 3" if by_time else "1, 2"
    return f"""
    SELECT {time}r.metric, r.le_seconds, sum(r.feedback_count) AS n
    FROM feedbackflow.feedback_delay_rollup r
    WHERE {_in_range("r")} AND {_among("r.application", "applications")}
      AND {_among("r.model", "models")} AND {_among("r.metric", "metrics")}
    GROUP BY {group}"""


def _percentiles(by_time: bool) -> str:
    time = "time, " if by_time else ""
    return f"""
SELECT {time}metric, joined_count, q[1] AS p50_seconds, q[2] AS p90_seconds,
       q[3] AS p99_seconds
FROM (
    SELECT {time}metric, sum(n)::bigint AS joined_count,
           feedbackflow.histogram_quantiles(
               ARRAY[0.5, 0.9, 0.99], array_agg(le_seconds ORDER BY le_seconds),
               array_agg(n ORDER BY le_seconds)) AS q
    FROM ({_delay_bins(by_time)}) b
    GROUP BY {"1, 2" if by_time else "1"}
) h
WHERE joined_count > 0
ORDER BY {"1, 2" if by_time else "1"}
"""


DELAY_PERCENTILES_OVER_TIME = Query("delay_percentiles_over_time", _percentiles(by_time=True))
DELAY_PERCENTILES = Query("delay_percentiles", _percentiles(by_time=False))

COVERAGE = Query(
    "coverage",
    f"""
SELECT r.bucket AS time, r.application, r.model,
       sum(r.predictions)::bigint AS predictions, sum(r.with_feedback)::bigint AS with_feedback,
       (sum(r.with_feedback) / nullif(sum(r.predictions), 0))::double precision AS coverage
FROM feedbackflow.prediction_coverage_rollup r
WHERE {_in_range("r")} AND {_among("r.application", "applications")}
  AND {_among("r.model", "models")}
GROUP BY 1, 2, 3
HAVING sum(r.predictions) > 0 OR sum(r.with_feedback) > 0
ORDER BY 1, 2, 3
""",
)

BACKLOG = Query(
    "backlog",
    f"""
SELECT r.bucket AS time, r.metric,
       {_counted("pending")},
       {_counted("expired")}
FROM feedbackflow.feedback_rollup r
WHERE {_in_range("r")} AND r.status IN ('pending', 'expired') AND {_among("r.metric", "metrics")}
GROUP BY 1, 2
HAVING sum(r.feedback_count) <> 0
ORDER BY 1, 2
""",
)

# Cohen's kappa between two source types: observed agreement p_o (the diagonal of the pairs'
# contingency table) against p_e, what their marginals agree by chance.
COHEN_KAPPA = Query(
    "cohen_kappa",
    f"""
WITH pairs AS (
    SELECT r.bucket AS time, r.metric, r.source_type_a, r.source_type_b, r.category_a,
           r.category_b, sum(r.items) AS n
    FROM feedbackflow.agreement_pair_rollup r
    WHERE {_in_range("r")} AND {_among("r.metric", "metrics")}
      AND r.source_type_a = least(:source_type_a::text, :source_type_b::text)
      AND r.source_type_b = greatest(:source_type_a::text, :source_type_b::text)
    GROUP BY 1, 2, 3, 4, 5, 6
    HAVING sum(r.items) > 0
), totals AS (
    SELECT time, metric, source_type_a, source_type_b, sum(n) AS items,
           coalesce(sum(n) FILTER (WHERE category_a = category_b), 0) AS agreeing
    FROM pairs GROUP BY 1, 2, 3, 4
), chance AS (
    SELECT a.time, a.metric, sum(a.n * b.n) AS products
    FROM (SELECT time, metric, category_a AS category, sum(n) AS n FROM pairs
          GROUP BY 1, 2, 3) a
    JOIN (SELECT time, metric, category_b AS category, sum(n) AS n FROM pairs
          GROUP BY 1, 2, 3) b USING (time, metric, category)
    GROUP BY 1, 2
)
SELECT t.time, t.metric, t.source_type_a, t.source_type_b, t.items::bigint AS items,
       (t.agreeing / t.items)::double precision AS observed_agreement,
       (CASE WHEN coalesce(c.products, 0) <> t.items * t.items
             THEN (t.agreeing / t.items - coalesce(c.products, 0) / (t.items * t.items))
                  / (1 - coalesce(c.products, 0) / (t.items * t.items))
        END)::double precision AS kappa
FROM totals t LEFT JOIN chance c USING (time, metric)
ORDER BY 1, 2
""",
)

# Fleiss' kappa across sources: the mean of the items' agreement P_i against P_e, the sum of the
# squared shares of each category among all ratings.
FLEISS_KAPPA = Query(
    "fleiss_kappa",
    f"""
WITH items AS (
    SELECT r.bucket AS time, r.metric, sum(r.items) AS items, sum(r.ratings) AS ratings,
           sum(r.sum_item_agreement) AS agreement
    FROM feedbackflow.agreement_item_rollup r
    WHERE {_in_range("r")} AND {_among("r.metric", "metrics")}
    GROUP BY 1, 2
    HAVING sum(r.items) > 0
), chance AS (
    SELECT c.time, c.metric, sum(power(c.n / i.ratings, 2)) AS expected
    FROM (SELECT r.bucket AS time, r.metric, r.category, sum(r.ratings) AS n
          FROM feedbackflow.agreement_category_rollup r
          WHERE {_in_range("r")} AND {_among("r.metric", "metrics")}
          GROUP BY 1, 2, 3) c
    JOIN items i USING (time, metric)
    GROUP BY 1, 2
)
SELECT i.time, i.metric, i.items::bigint AS items, i.ratings::bigint AS ratings,
       (i.agreement / i.items)::double precision AS mean_item_agreement,
       (CASE WHEN c.expected <> 1
             THEN (i.agreement / i.items - c.expected) / (1 - c.expected)
        END)::double precision AS kappa
FROM items i JOIN chance c USING (time, metric)
ORDER BY 1, 2
""",
)

# Comments and demonstrations with the prediction they are about: feedback itself, newest
# first, by the partial index on their time (migration 0006) within the range's partitions.
LATEST_COMMENTS = Query(
    "latest_comments",
    f"""
SELECT f.ts AS time, f.feedback_id, f.metric, f.metric_type, f.value_text,
       f.value_json::text AS value_json, f.rationale, f.source_type, f.source_id, f.status,
       f.application, f.model, f.prediction_id, p.inputs::text AS inputs,
       p.outputs::text AS outputs
FROM feedbackflow.feedback f
LEFT JOIN LATERAL (
    SELECT p.inputs, p.outputs FROM feedbackflow.predictions p
    WHERE p.prediction_id = f.prediction_id AND p.ts = f.prediction_ts
    LIMIT 1
) p ON true
WHERE f.ts >= :time_from::timestamptz AND f.ts < :time_to::timestamptz
  AND f.metric_type IN ('comment', 'demonstration')
  AND (f.value_text IS NOT NULL OR f.value_json IS NOT NULL)
  AND {_among("f.application", "applications")} AND {_among("f.metric", "metrics")}
ORDER BY f.ts DESC, f.feedback_id DESC
LIMIT :limit::integer
""",
)

QUERIES: tuple[Query, ...] = (
    FEEDBACK_VOLUME,
    METRIC_VALUES,
    CATEGORY_DISTRIBUTION,
    DELAY_PERCENTILES_OVER_TIME,
    DELAY_PERCENTILES,
    COVERAGE,
    BACKLOG,
    COHEN_KAPPA,
    FLEISS_KAPPA,
    LATEST_COMMENTS,
)


@dataclass(frozen=True)
class VolumeRow:
    time: datetime
    metric: str
    feedback_count: int
    joined_count: int
    pending_count: int
    expired_count: int
    error_count: int


@dataclass(frozen=True)
class MetricValueRow:
    """``value``: the share positive of a boolean metric, the mean of a float one."""

    time: datetime
    metric: str
    metric_type: str
    application: str
    model: str | None
    value_count: int
    value: float
    stddev: float | None


@dataclass(frozen=True)
class CategoryRow:
    metric: str
    category: str
    feedback_count: int
    share: float


@dataclass(frozen=True)
class DelayOverTimeRow:
    time: datetime
    metric: str
    joined_count: int
    p50_seconds: float
    p90_seconds: float
    p99_seconds: float


@dataclass(frozen=True)
class DelayRow:
    metric: str
    joined_count: int
    p50_seconds: float
    p90_seconds: float
    p99_seconds: float


@dataclass(frozen=True)
class CoverageRow:
    """Per bucket of prediction time: ``coverage`` = with_feedback / predictions."""

    time: datetime
    application: str
    model: str | None
    predictions: int
    with_feedback: int
    coverage: float | None


@dataclass(frozen=True)
class BacklogRow:
    time: datetime
    metric: str
    pending_count: int
    expired_count: int


@dataclass(frozen=True)
class CohenRow:
    """``kappa`` is None when chance alone agrees fully (one category on both sides)."""

    time: datetime
    metric: str
    source_type_a: str
    source_type_b: str
    items: int
    observed_agreement: float
    kappa: float | None


@dataclass(frozen=True)
class FleissRow:
    time: datetime
    metric: str
    items: int
    ratings: int
    mean_item_agreement: float
    kappa: float | None


@dataclass(frozen=True)
class CommentRow:
    """``value_json``, ``inputs`` and ``outputs`` decoded from JSON."""

    time: datetime
    feedback_id: object
    metric: str
    metric_type: str
    value_text: str | None
    value_json: object
    rationale: str | None
    source_type: str | None
    source_id: str | None
    status: str
    application: str | None
    model: str | None
    prediction_id: object
    inputs: object
    outputs: object


Row = TypeVar("Row")
_JSON_FIELDS = frozenset({"value_json", "inputs", "outputs"})


@dataclass(frozen=True)
class Selection:
    """What a query reads: the range [time_from, time_to) and filters (None keeps all).  The
    grain is the range's unless one is asked for (latest_comments reads rows, not rollups, and
    has none); a filter a query does not take is refused."""

    time_from: datetime
    time_to: datetime
    applications: Sequence[str] | None = None
    models: Sequence[str] | None = None
    metrics: Sequence[str] | None = None
    grain: Grain | None = None

    def arguments(self, query: Query) -> dict[str, object]:
        given: dict[str, object] = {
            "time_from": self.time_from,
            "time_to": self.time_to,
            "grain": self.grain,
        }
        for name in ("applications", "models", "metrics"):
            values: Sequence[str] | None = getattr(self, name)
            if values is not None and name not in query.parameters:
                raise ValueError(f"query {query.name!r} takes no filter on {name}")
            given[name] = None if values is None else list(values)
        return given


async def _fetch(
    conn: asyncpg.Connection,
    query: Query,
    row: type[Row],
    selection: Selection,
    **more: object,
) -> list[Row]:
    arguments = {**selection.arguments(query), **more}
    records = await conn.fetch(query.for_asyncpg(), *(arguments[name] for name in query.parameters))
    names = [f.name for f in fields(row)]  # type: ignore[arg-type]
    return [
        row(
            **{
                name: json.loads(r[name])
                if name in _JSON_FIELDS and r[name] is not None
                else r[name]
                for name in names
            }
        )
        for r in records
    ]


async def feedback_volume(conn: asyncpg.Connection, selection: Selection) -> list[VolumeRow]:
    """Current feedback per metric and bucket, by status, and errors.  Filters: applications,
    metrics."""
    return await _fetch(conn, FEEDBACK_VOLUME, VolumeRow, selection)


async def metric_values(conn: asyncpg.Connection, selection: Selection) -> list[MetricValueRow]:
    """Joined feedback of boolean and float metrics per model and bucket: one value column,
    the share positive or the mean.  Filters: applications, models, metrics."""
    return await _fetch(conn, METRIC_VALUES, MetricValueRow, selection)


async def category_distribution(
    conn: asyncpg.Connection, selection: Selection
) -> list[CategoryRow]:
    """Categorical metrics over the range: current feedback per category, and its share.
    Filters: applications, models, metrics."""
    return await _fetch(conn, CATEGORY_DISTRIBUTION, CategoryRow, selection)


async def delay_percentiles_over_time(
    conn: asyncpg.Connection, selection: Selection
) -> list[DelayOverTimeRow]:
    """Feedback delay p50/p90/p99 per metric and bucket (interpolated in the histogram).
    Filters: applications, models, metrics."""
    return await _fetch(conn, DELAY_PERCENTILES_OVER_TIME, DelayOverTimeRow, selection)


async def delay_percentiles(conn: asyncpg.Connection, selection: Selection) -> list[DelayRow]:
    """Feedback delay p50/p90/p99 per metric over the whole range.  Filters: applications,
    models, metrics."""
    return await _fetch(conn, DELAY_PERCENTILES, DelayRow, selection)


async def coverage(conn: asyncpg.Connection, selection: Selection) -> list[CoverageRow]:
    """Predictions per model and bucket of prediction time, and the share with joined
    feedback.  Filters: applications, models."""
    return await _fetch(conn, COVERAGE, CoverageRow, selection)


async def backlog(conn: asyncpg.Connection, selection: Selection) -> list[BacklogRow]:
    """Feedback still pending, and expired, per metric and bucket of feedback time.  Filters:
    metrics."""
    return await _fetch(conn, BACKLOG, BacklogRow, selection)


async def cohen_kappa(
    conn: asyncpg.Connection, selection: Selection, source_type_a: str, source_type_b: str
) -> list[CohenRow]:
    """Cohen's kappa between two source types (e.g. llm_judge and human) per metric and
    bucket, over the items both rated (boolean and categorical metrics).  Filters: metrics."""
    return await _fetch(
        conn,
        COHEN_KAPPA,
        CohenRow,
        selection,
        source_type_a=source_type_a,
        source_type_b=source_type_b,
    )


async def fleiss_kappa(conn: asyncpg.Connection, selection: Selection) -> list[FleissRow]:
    """Fleiss' kappa across sources per metric and bucket, over items with two ratings or
    more (boolean and categorical metrics).  Filters: metrics."""
    return await _fetch(conn, FLEISS_KAPPA, FleissRow, selection)


async def latest_comments(
    conn: asyncpg.Connection, selection: Selection, limit: int = 50
) -> list[CommentRow]:
    """The newest comments and demonstrations in the range, with their prediction's inputs and
    outputs.  Filters: applications, metrics."""
    return await _fetch(conn, LATEST_COMMENTS, CommentRow, selection, limit=limit)
