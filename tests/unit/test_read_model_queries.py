"""The read model's queries as text: one definition, spelled for asyncpg and for Grafana."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from workers.read_model import queries


@pytest.mark.parametrize("query", queries.QUERIES, ids=lambda q: q.name)
def test_each_query_is_numbered_for_asyncpg_in_the_order_of_its_parameters(
    query: queries.Query,
) -> None:
    text = query.for_asyncpg()
    numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", text)})
    assert numbers == list(range(1, len(query.parameters) + 1))
    assert not re.search(r"(?<![:\w]):[a-z_]+\b", text)


@pytest.mark.parametrize("query", queries.QUERIES, ids=lambda q: q.name)
def test_each_query_is_bounded_by_the_panels_range_in_grafana(query: queries.Query) -> None:
    text = query.for_grafana()
    assert "$__timeFrom()" in text
    assert "$__timeTo()" in text
    assert not re.search(r"(?<![:\w]):[a-z_]+\b", text)
    assert "$1" not in text


def test_a_parameter_grafana_cannot_spell_is_named() -> None:
    query = queries.Query("odd", "SELECT :time_from::timestamptz, :colour::text")
    with pytest.raises(ValueError, match=r"'odd'.*\['colour'\]"):
        query.for_grafana()


def test_a_filter_the_query_does_not_take_is_refused_by_name() -> None:
    selection = queries.Selection(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), models=["m-a"]
    )
    with pytest.raises(ValueError, match="'backlog' takes no filter on models"):
        selection.arguments(queries.BACKLOG)
    assert selection.arguments(queries.METRIC_VALUES)["models"] == ["m-a"]
