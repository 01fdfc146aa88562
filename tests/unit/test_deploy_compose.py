"""docker-compose.yml reaches a healthy stack on its first ``up``, checked without Docker: the
Compose Specification's schema, the files it mounts, its ports, the settings each service sets,
and the order of start-up (healthchecks and the conditions that wait on them)."""

from __future__ import annotations

import json
import re
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy_files import (
    COMPOSE_FILE,
    ROOT,
    app_variables,
    compose,
    compose_raw,
    interpolate,
    service_environment,
    settings_variables,
)
from workers.settings import Settings

# Ports a developer's machine often has taken: a local PostgreSQL, a local Kafka.
LOCAL_SERVER_PORTS = {5432: "a local PostgreSQL", 9092: "a local Kafka"}
# What must be healthy before anything that depends on it starts.
MUST_HAVE_HEALTHCHECKS = ("postgres", "kafka", "worker", "api")


def compose_spec_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema as check-jsonschema vendors it (kept current
    with compose-spec upstream).  Read as a file: importing the package would import its CLI."""
    path = distribution("check-jsonschema").locate_file(
        "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
    )
    schema: dict[str, Any] = json.loads(Path(str(path)).read_text(encoding="utf-8"))
    return schema


SERVICES: dict[str, Any] = compose()["services"]


def test_the_file_follows_the_compose_specification() -> None:
    schema = compose_spec_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose_raw())]
    assert errors == []


def test_the_schema_check_catches_a_mistake() -> None:
    """The schema is strict enough to matter: a misspelt key is refused."""
    schema = compose_spec_schema()
    broken = compose_raw()
    broken["services"]["worker"]["depends_on"]["kafka"] = {"condition": "service_healty"}
    broken["services"]["api"]["helthcheck"] = {"test": ["CMD", "true"]}
    messages = [
        e.message for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(broken)
    ]
    assert any("service_healty" in m for m in messages)
    assert any("helthcheck" in m for m in messages)


def test_interpolation_uses_defaults_and_the_environment() -> None:
    text = "a=${A:-one} b=${B:-two} c=$${NOT} d=${D-}"
    assert interpolate(text, {"B": "set"}) == "a=one b=set c=${NOT} d="
    with pytest.raises(KeyError, match="E: needed"):
        interpolate("${E:?needed}", {})


def test_the_file_starts_without_any_variable_set() -> None:
    """Every ``${...}`` has a default: the first ``up`` needs no .env file."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for match in re.finditer(r"\$\{([^}]*)\}", text):
        assert ":-" in match.group(1), f"${{{match.group(1)}}} has no default"


def _bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_every_file_it_refers_to_exists() -> None:
    referenced: list[str] = []
    for service in SERVICES.values():
        build = service.get("build")
        if build:
            referenced += [build["context"], str(Path(build["context"]) / build["dockerfile"])]
        referenced += _bind_sources(service)
    assert "deploy/Dockerfile" in referenced
    assert "./deploy/grafana/provisioning" in referenced
    missing = [path for path in referenced if not (ROOT / path).exists()]
    assert missing == []


def _published_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(int(port["published"]))
        else:
            parts = str(port).split(":")
            ports.append(int(parts[-2]))  # host[:ip]:published:target -> published
    return ports


def test_host_ports_collide_neither_with_each_other_nor_with_local_servers() -> None:
    published = [(port, name) for name, s in SERVICES.items() for port in _published_ports(s)]
    ports = [port for port, _ in published]
    assert len(ports) == len(set(ports)), published
    for port, name in published:
        assert port not in LOCAL_SERVER_PORTS, (
            f"{name} publishes {port}, {LOCAL_SERVER_PORTS[port]}"
        )
    # Replicas of one service cannot all bind one host port.
    for name, service in SERVICES.items():
        if service.get("deploy", {}).get("replicas", 1) > 1:
            assert _published_ports(service) == [], name


def test_every_feedbackflow_variable_is_a_setting_the_app_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = settings_variables()
    assert {"FEEDBACKFLOW_KAFKA_BOOTSTRAP", "FEEDBACKFLOW_GATEWAY__TOKEN_SECRET"} <= known
    setters = 0
    for name, service in SERVICES.items():
        variables = app_variables(service_environment(service))
        unknown = sorted(set(variables) - known)
        assert unknown == [], f"{name} sets {unknown}, which workers/settings.py does not read"
        # And their values are valid for the settings, as the service would load them.
        with monkeypatch.context() as env:
            for variable, value in variables.items():
                env.setenv(variable, value)
            Settings()
        setters += bool(variables)
    assert setters == 3  # migrate, worker, api


def test_the_services_that_others_wait_for_have_healthchecks() -> None:
    for name in MUST_HAVE_HEALTHCHECKS:
        check = SERVICES[name].get("healthcheck", {})
        assert not check.get("disable"), f"{name}'s healthcheck is disabled"
        assert check.get("test"), f"{name} has no healthcheck"


def _waits(name: str) -> dict[str, str]:
    depends = SERVICES[name].get("depends_on", {})
    return {other: spec["condition"] for other, spec in depends.items()}


def test_start_up_waits_for_healthy_servers_and_finished_migrations() -> None:
    assert _waits("migrate") == {"postgres": "service_healthy"}
    for name in ("worker", "api"):
        waits = _waits(name)
        assert waits["migrate"] == "service_completed_successfully", name
        assert waits["kafka"] == "service_healthy", name
    # A condition on health needs a healthcheck to ever be met.
    for name in SERVICES:
        for other, condition in _waits(name).items():
            if condition == "service_healthy":
                assert SERVICES[other].get("healthcheck", {}).get("test"), (name, other)


def test_what_can_fail_at_start_is_restarted() -> None:
    assert SERVICES["migrate"]["restart"].startswith("on-failure")
    for name in ("worker", "api", "kafka", "postgres"):
        assert SERVICES[name]["restart"] in {"unless-stopped", "always"}, name


def test_two_workers_share_the_partitions() -> None:
    worker = SERVICES["worker"]
    partitions = int(SERVICES["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])
    assert 2 <= worker["deploy"]["replicas"] <= partitions
    assert "FEEDBACKFLOW_KAFKA_GROUP_INSTANCE_ID" not in service_environment(worker)


def _listeners(value: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in value.split(","))


def test_kafka_advertises_one_address_to_containers_and_one_to_the_host() -> None:
    kafka = SERVICES["kafka"]["environment"]
    advertised = _listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    listening = _listeners(kafka["KAFKA_LISTENERS"])
    assert set(advertised) < set(listening)
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listening) == set(protocols)
    internal = {
        service_environment(SERVICES[n])["FEEDBACKFLOW_KAFKA_BOOTSTRAP"] for n in ("worker", "api")
    }
    assert internal == {advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]]} == {"kafka:9092"}
    external = [a for a in advertised.values() if a.startswith("localhost:")]
    assert len(external) == 1
    port = int(external[0].rsplit(":", 1)[1])
    assert port in _published_ports(SERVICES["kafka"])
    (name,) = [n for n, a in advertised.items() if a == external[0]]
    assert listening[name] == f":{port}"  # the host port reaches the same port inside


def _healthcheck_port(name: str) -> int:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "/usr/local/bin/feedbackflow-healthcheck"]
    return int(test[3])


def test_healthchecks_and_scrapes_reach_the_ports_the_processes_listen_on() -> None:
    worker_env = service_environment(SERVICES["worker"])
    api_env = service_environment(SERVICES["api"])
    worker_port = int(worker_env["FEEDBACKFLOW_HTTP_PORT"])
    api_port = int(api_env["FEEDBACKFLOW_GATEWAY__PORT"])
    assert _healthcheck_port("worker") == worker_port
    assert _healthcheck_port("api") == api_port
    assert api_env["FEEDBACKFLOW_GATEWAY__HOST"] == "0.0.0.0"  # noqa: S104 - reachable from others
    assert api_port in _published_ports(SERVICES["api"])

    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    (worker_sd,) = jobs["feedbackflow-worker"]["dns_sd_configs"]
    assert worker_sd["names"] == ["worker"]
    assert worker_sd["port"] == worker_port
    (gateway,) = jobs["feedbackflow-gateway"]["static_configs"]
    assert gateway["targets"] == [f"api:{api_port}"]


def test_grafana_logs_in_as_the_reader_login_never_the_superuser() -> None:
    grafana = service_environment(SERVICES["grafana"])
    postgres = service_environment(SERVICES["postgres"])
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/feedbackflow.yml").read_text()
    )["datasources"]
    (pg,) = [d for d in datasources if "postgres" in d["type"]]
    assert pg["user"] == "$GRAFANA_DB_USER"
    assert pg["secureJsonData"]["password"] == "$GRAFANA_DB_PASSWORD"
    # Grafana reads the login that the init script creates, with the same password.
    for variable in ("GRAFANA_DB_USER", "GRAFANA_DB_PASSWORD"):
        assert grafana[variable] == postgres[variable], variable
    assert grafana["GRAFANA_DB_USER"] not in {"postgres", postgres.get("POSTGRES_USER")}
    script = ROOT / "deploy/postgres/initdb/10-grafana-login.sh"
    assert "./deploy/postgres/initdb" in _bind_sources(SERVICES["postgres"])
    assert "IN ROLE feedbackflow_reader" in script.read_text()
    # The dashboards folder is provisioned, and mounted where the provider looks.
    providers = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/feedbackflow.yml").read_text()
    )["providers"]
    (provider,) = providers
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
