"""What Grafana's PostgreSQL data source does to a panel's SQL before sending it, for the macros
and variable formats the dashboards use, so that the tests can run the committed SQL itself.

Grafana replaces ``$__timeFrom()`` and ``$__timeTo()`` with the panel's range as quoted RFC 3339
UTC literals (its macro engine, pkg/tsdb/grafana-postgresql-datasource/macros.go), and a
multi-value variable written ``${name:sqlstring}`` with each selected value single-quoted
(quotes doubled) and joined by commas; when "All" is selected and the variable has a custom all
value, with that value as it is, unformatted (public/app/features/templating/template_srv.ts).
No Grafana server runs here (it is AGPL, and the suite runs without Docker), so this is the
documented substitution, nothing more: any other macro in a panel fails the test rather than
pass through unexpanded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

_VARIABLE = re.compile(r"\$\{(\w+):sqlstring\}")
_LEFT_OVER = re.compile(r"\$(?:__\w+|\{[^}]*\}|\w+)")


@dataclass(frozen=True)
class All:
    """ "All" selected, on a variable whose custom all value is ``value``."""

    value: str


def _rfc3339(moment: datetime) -> str:
    return "'" + moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _quoted(values: Sequence[str]) -> str:
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def interpolate(
    sql: str,
    since: datetime,
    until: datetime,
    variables: Mapping[str, Sequence[str] | All],
) -> str:
    """``sql`` as Grafana sends it for the range ``since``..``until`` and the selected values
    (or All)."""
    text = sql.replace("$__timeFrom()", _rfc3339(since)).replace("$__timeTo()", _rfc3339(until))

    def value(match: re.Match[str]) -> str:
        chosen = variables[match.group(1)]
        return chosen.value if isinstance(chosen, All) else _quoted(chosen)

    text = _VARIABLE.sub(value, text)
    left = _LEFT_OVER.findall(re.sub(r"'(?:[^']|'')*'", "''", text))
    left = [m for m in left if not re.fullmatch(r"\$\d+", m)]
    if left:
        raise ValueError(f"macros this test does not expand: {sorted(set(left))}")
    return text
