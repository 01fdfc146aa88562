"""A Grafana PostgreSQL query, for the foundation SDK's panel builders.

The SDK ships query builders for Prometheus, Loki and others, not for Grafana's SQL data sources:
this is the small model and builder it lacks, with the fields Grafana's PostgreSQL data source
reads (``rawSql`` in code mode, and whether the rows are a time series or a table).
"""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

# A time series wants a `time` column; a table takes the rows as they come.
Format = Literal["time_series", "table"]


class SqlDataquery(cogvariants.Dataquery):
    def __init__(
        self, ref_id: str, raw_sql: str, format_val: Format, datasource: DataSourceRef
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "editorMode": "code",
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "format": self.format_val,
        }


class SqlQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """``SqlQuery(sql).table()``: a panel's SQL, by default a time series."""

    def __init__(self, raw_sql: str, datasource: DataSourceRef) -> None:
        self._sql = raw_sql
        self._datasource = datasource
        self._ref_id = "A"
        self._format: Format = "time_series"

    def ref_id(self, ref_id: str) -> SqlQuery:
        self._ref_id = ref_id
        return self

    def table(self) -> SqlQuery:
        self._format = "table"
        return self

    def build(self) -> SqlDataquery:
        return SqlDataquery(self._ref_id, self._sql, self._format, self._datasource)
