"""The agreement formulas of the read model (migration 0006 and workers.read_model.queries) on
textbook examples: ratings put through the same SQL that maintains the rollups, kappa read by
the same queries the dashboards use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from workers.read_model import queries

HOUR = datetime(2026, 1, 5, 10, tzinfo=UTC)
WHOLE_HOUR = queries.Selection(HOUR, HOUR + timedelta(hours=1), grain="1h")

# Fleiss (1971), as in Wikipedia's "Fleiss' kappa": 10 items, 14 raters, 5 categories; the
# ratings per category of each item.  Kappa 0.210 (P = 0.378, Pe = 0.213).
FLEISS_EXAMPLE = (
    (0, 0, 0, 0, 14),
    (0, 2, 6, 4, 2),
    (0, 0, 3, 5, 6),
    (0, 3, 9, 2, 0),
    (2, 2, 8, 1, 1),
    (7, 7, 0, 0, 0),
    (3, 2, 6, 3, 0),
    (2, 5, 3, 2, 2),
    (6, 5, 2, 1, 0),
    (0, 2, 2, 3, 7),
)

# Wikipedia's "Cohen's kappa" example: 50 proposals read by A and B; yes/yes 20, yes/no 5,
# no/yes 10, no/no 15.  p_o = 0.7, p_e = 0.5, kappa 0.4.
COHEN_EXAMPLE = {("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15}

RATING = "INSERT INTO read_model_ratings VALUES (1, 'join_key', $1, $2, $3, $4, $5, $6, $7)"


async def add_ratings(db: asyncpg.Connection, ratings: Sequence[tuple[object, ...]]) -> None:
    """Ratings (item, metric, source id, source type, category) through the maintenance SQL."""
    async with db.transaction():
        await db.execute("SELECT feedbackflow.read_model_work_tables()")
        await db.executemany(
            RATING,
            [
                (item, metric, source, kind, uuid_of(n), HOUR, category)
                for n, (item, metric, source, kind, category) in enumerate(ratings)
            ],
        )
        await db.execute("SELECT feedbackflow.read_model_add_ratings()")


def uuid_of(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


async def test_fleiss_kappa_of_the_textbook_example(db: asyncpg.Connection) -> None:
    ratings = [
        (f"item-{i}", "grade", f"rater-{i}-{j}-{k}", None, f"c{j}")
        for i, row in enumerate(FLEISS_EXAMPLE)
        for j, n in enumerate(row)
        for k in range(n)
    ]
    await add_ratings(db, ratings)
    [fleiss] = await queries.fleiss_kappa(db, WHOLE_HOUR)
    assert (fleiss.items, fleiss.ratings) == (10, 140)
    assert fleiss.mean_item_agreement == pytest.approx(0.378, abs=5e-4)
    assert fleiss.kappa == pytest.approx(0.210, abs=5e-4)


async def test_cohen_kappa_of_the_textbook_example(db: asyncpg.Connection) -> None:
    ratings: list[tuple[object, ...]] = []
    for (a, b), n in COHEN_EXAMPLE.items():
        for k in range(n):
            item = f"{a}-{b}-{k}"
            ratings += [(item, "fund", "a", "human", a), (item, "fund", "b", "llm_judge", b)]
    await add_ratings(db, ratings)
    [cohen] = await queries.cohen_kappa(db, WHOLE_HOUR, "human", "llm_judge")
    assert cohen.items == 50
    assert cohen.observed_agreement == pytest.approx(0.7)
    assert cohen.kappa == pytest.approx(0.4)
    # Two raters of 50 items are also what Fleiss measures, with its own chance term.
    [fleiss] = await queries.fleiss_kappa(db, WHOLE_HOUR)
    assert (fleiss.items, fleiss.ratings) == (50, 100)
    assert fleiss.mean_item_agreement == pytest.approx(0.7)


async def test_agreement_by_chance_alone_has_no_kappa(db: asyncpg.Connection) -> None:
    """Every rating in one category: p_e = 1, kappa undefined (None), not a division error."""
    await add_ratings(
        db,
        [(f"i{k}", "m", s, t, "yes") for k in range(3) for s, t in (("a", "human"), ("b", "code"))],
    )
    [cohen] = await queries.cohen_kappa(db, WHOLE_HOUR, "human", "code")
    assert (cohen.items, cohen.observed_agreement, cohen.kappa) == (3, 1.0, None)
    [fleiss] = await queries.fleiss_kappa(db, WHOLE_HOUR)
    assert (fleiss.items, fleiss.kappa) == (3, None)
