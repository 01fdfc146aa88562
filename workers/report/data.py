"""What the report draws, read through the read model's typed queries (the same SQL as the
Feedback dashboard's panels), so the PNG and Grafana cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass, replace

import asyncpg

from workers.read_model import queries
from workers.read_model.queries import (
    BacklogRow,
    CohenRow,
    CoverageRow,
    DelayOverTimeRow,
    FleissRow,
    MetricValueRow,
    Selection,
    VolumeRow,
)

# The source types whose agreement the report draws: an LLM judge against people, the pairing
# MLflow's users ask about (mlflow#22947).
JUDGE = "llm_judge"
PEOPLE = ("human", "end_user")


@dataclass(frozen=True)
class ReportData:
    selection: Selection
    values: list[MetricValueRow]
    volume: list[VolumeRow]
    delays: list[DelayOverTimeRow]
    coverage: list[CoverageRow]
    backlog: list[BacklogRow]
    cohen: list[CohenRow]
    fleiss: list[FleissRow]

    @property
    def empty(self) -> bool:
        return not (self.volume or self.coverage)


async def read_report(conn: asyncpg.Connection, selection: Selection) -> ReportData:
    # Each query gets the filters it takes (Selection refuses others): kappa and the backlog
    # none of application or model, the volume none of model, coverage none of metric.
    by_metric = replace(selection, applications=None, models=None)
    cohen: list[CohenRow] = []
    for people in PEOPLE:
        cohen += await queries.cohen_kappa(conn, by_metric, JUDGE, people)
    volume = await queries.feedback_volume(conn, replace(selection, models=None))
    return ReportData(
        selection=selection,
        values=await queries.metric_values(conn, selection),
        volume=volume,
        delays=await queries.delay_percentiles_over_time(conn, selection),
        coverage=await queries.coverage(conn, replace(selection, metrics=None)),
        backlog=await queries.backlog(conn, by_metric),
        cohen=cohen,
        fleiss=await queries.fleiss_kappa(conn, by_metric),
    )
