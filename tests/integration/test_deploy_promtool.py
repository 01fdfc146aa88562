"""The Prometheus config of docker-compose.yml, checked by Prometheus' own promtool (Debian's
prometheus package, which `make test` installs: deploy/dev/ensure-prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.deploy_files import ROOT

CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _promtool_check(config: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (deploy/dev/ensure-prometheus)"
    return subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    checked = _promtool_check(CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_refuses_a_broken_one(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus.yml"
    broken.write_text(CONFIG.read_text().replace("type: A", "type: AAAAA"))
    assert _promtool_check(broken).returncode != 0
