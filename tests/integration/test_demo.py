"""``make demo`` (``feedbackflow demo``) works as the README says: every number it sent adds up
in Postgres.  Run here on the suite's broker and PostgreSQL, named as a user would name theirs
(the demo starts embedded servers only for what is not named), with a working directory whose
feedbackflow.toml declares 5-minute windows, as the repository's own does."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from matplotlib.image import imread

from tests.conftest import PostgresServer
from workers.devstack.demo import run_demo
from workers.devstack.servers import TansuBroker
from workers.settings import Settings

REPOSITORY_CONFIG = Path(__file__).resolve().parents[2] / "feedbackflow.toml"


async def test_the_demo_adds_up(
    kafka: TansuBroker,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "feedbackflow.toml").write_text(REPOSITORY_CONFIG.read_text())
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(kafka_bootstrap=kafka.bootstrap, database_url=postgres.admin_url)
    assert settings.pipeline.window.total_seconds() == 300  # what the demo must not use
    code = await asyncio.to_thread(
        run_demo, settings.model_copy(update={"kafka_idempotence": False}), 300
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "All numbers add up" in out
    assert "feedback through the HTTP gateway (POST /v1/batch)" in out
    # It showed nothing while it ran; now its progress, ending with everything landed.
    landed = re.search(r"landed in Postgres \(1s windows\).*? (\d+)/(\d+)", out)
    assert landed is not None, out
    assert landed.group(1) == landed.group(2)
    assert re.search(r"sent to Kafka and the gateway.*? (\d+)/\1", out) is not None, out
    # And drew the report of what landed, where it said.
    assert "The read model drawn (`feedbackflow report`): .feedbackflow/demo-report.png" in out
    assert imread(tmp_path / ".feedbackflow" / "demo-report.png").shape == (900, 1500, 4)
