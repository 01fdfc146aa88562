"""The command line: a bad metric config stops the worker before it touches anything, and
migrations are safe to run again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from workers.postgres.migrate import available_migrations, migrate


def test_worker_with_a_bad_metric_config_exits_naming_the_metric(tmp_path: Path) -> None:
    config = tmp_path / "feedbackflow.toml"
    config.write_text('[metrics.stars]\ntype = "float"\nmin = 5\nmax = 1\n')
    env = {
        **os.environ,
        "FEEDBACKFLOW_CONFIG": str(config),
        "FEEDBACKFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "[metrics.stars]" in result.stderr
    assert "min 5 is greater than max 1" in result.stderr


async def test_migrate_twice_applies_nothing_the_second_time(db: asyncpg.Connection) -> None:
    # The test database was cloned from a migrated template: everything is applied already.
    assert await migrate(db) == []
    versions = await db.fetch("SELECT version FROM public.feedbackflow_migrations ORDER BY 1")
    assert [r["version"] for r in versions] == [m.version for m in available_migrations()]
