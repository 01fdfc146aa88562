"""The README's "Deploying" section says what the files do: its commands name services,
Deployments and paths that exist, its table lists the ports the compose file publishes, and the
addresses it gives are the ones Kafka advertises.  (The commands that need no Docker run for
real in tests/integration/test_deploy_readme.py.)"""

from __future__ import annotations

import re
import shlex

from tests.deploy_files import (
    ROOT,
    by_kind,
    code_blocks,
    compose,
    kustomize_build,
    readme_section,
    service_environment,
)

SECTION = readme_section("Deploying")
SERVICES = compose()["services"]
COMPOSE_COMMANDS = {"up", "ps", "exec", "logs", "down", "build"}


def _commands() -> list[list[str]]:
    commands = []
    for block in code_blocks(SECTION, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def test_the_compose_commands_name_its_services() -> None:
    compose_commands = [w for w in _commands() if w[:2] == ["docker", "compose"]]
    assert len(compose_commands) == 3
    for words in compose_commands:
        assert words[2] in COMPOSE_COMMANDS, words
        if words[2] == "exec":
            assert words[3] in SERVICES, words
            assert words[4] == "feedbackflow", words


def test_the_kubectl_commands_name_what_the_base_has() -> None:
    deployments = by_kind(kustomize_build(), "Deployment")
    kubectl = [w for w in _commands() if w[0] == "kubectl"]
    applied = [w[3] for w in kubectl if w[1:3] == ["apply", "-k"]]
    assert applied == ["deploy/kubernetes/base"]
    assert (ROOT / applied[0] / "kustomization.yaml").is_file()
    for words in kubectl:
        if words[1] == "exec":
            kind, _, name = words[2].partition("/")
            assert kind == "deploy", words
            assert name in deployments, words


def _table_ports() -> dict[str, int]:
    ports = {}
    for row in re.finditer(r"^\| `(\w+)` \|.*\| `?(?:localhost:)?(\d+)`? \|$", SECTION, re.M):
        ports[row.group(1)] = int(row.group(2))
    return ports


def test_the_table_lists_every_service_and_the_ports_it_publishes() -> None:
    listed = set(re.findall(r"^\| `(\w+)` \|", SECTION, re.M))
    assert listed == set(SERVICES)
    published = {}
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            published[name] = int(str(port).split(":")[-2])
    assert _table_ports() == published


def test_host_producers_get_the_address_kafka_advertises_to_the_host() -> None:
    advertised = service_environment(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    (host_address,) = re.findall(r"FEEDBACKFLOW_KAFKA_BOOTSTRAP=(\S+?)`", SECTION)
    assert f"://{host_address}" in advertised
    assert host_address.startswith("localhost:")


def test_the_variables_it_says_to_set_are_the_ones_the_file_reads() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    interpolated = set(re.findall(r"\$\{(\w+):-", text))
    said = set(
        re.findall(r"`(\w+)`", SECTION.split("the first `up`")[0].split("passwords have")[1])
    )
    assert said == interpolated
