"""The kustomize base (deploy/kubernetes/base), built as kustomize would, is valid against the
Kubernetes schemas (kubernetes-validate, strict) and holds together: selectors match labels,
probes ask /health of a port the container exposes, every ConfigMap and Secret it names is
generated or created by the README's commands, every FEEDBACKFLOW_* is a setting, and a worker
has the time to write what it read before it is killed."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from ingest.kafka_client import KafkaSettings
from tests.deploy_files import (
    DOCKERFILE,
    KUSTOMIZE_BASE,
    ROOT,
    Manifest,
    app_variables,
    by_kind,
    code_blocks,
    containers,
    kustomize_build,
    pod_specs,
    readme_section,
    settings_variables,
)
from workers.settings import PipelineSettings, Settings

MANIFESTS = kustomize_build()
DEPLOYMENTS = by_kind(MANIFESTS, "Deployment")
CONFIG_MAPS = by_kind(MANIFESTS, "ConfigMap")
WORKER = DEPLOYMENTS["feedbackflow-worker"]
GATEWAY = DEPLOYMENTS["feedbackflow-gateway"]
# The oldest Kubernetes still commonly run, and the newest the schemas know.
VERSIONS = ("1.30.0", max(set(all_versions()), key=lambda v: tuple(map(int, v.split(".")))))
# A window write in the slowest measured case takes under a second (50k events, 10M predictions
# stored: docs/performance.md); each window in flight is given ten times that.
WINDOW_WRITE_ALLOWANCE_SECONDS = 10.0


def _container(deployment: Manifest) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _all_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in MANIFESTS:
        for pod in pod_specs(manifest):
            for container in containers(pod):
                yield manifest["metadata"]["name"], container


def test_the_base_builds_what_it_should() -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"].rsplit("-", 1)[0]) for m in MANIFESTS)
    assert ("Job", "feedbackflow") in kinds  # feedbackflow-migrate
    assert {name for name in DEPLOYMENTS} == {"feedbackflow-worker", "feedbackflow-gateway"}
    assert len(by_kind(MANIFESTS, "PodDisruptionBudget")) == 2
    assert {name.rsplit("-", 1)[0] for name in CONFIG_MAPS} == {
        "feedbackflow-config",
        "feedbackflow-env",
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    for manifest in MANIFESTS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_schema_check_catches_a_mistake() -> None:
    broken = kustomize_build()
    worker = by_kind(broken, "Deployment")["feedbackflow-worker"]
    worker["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(worker, VERSIONS[-1], strict=True)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_match_the_pods_they_mean() -> None:
    for deployment in DEPLOYMENTS.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _matches(selector, deployment["spec"]["template"]["metadata"]["labels"])
    # Each budget and the Service select exactly one Deployment's pods.
    selecting = [
        *(
            p["spec"]["selector"]["matchLabels"]
            for p in by_kind(MANIFESTS, "PodDisruptionBudget").values()
        ),
        *(s["spec"]["selector"] for s in by_kind(MANIFESTS, "Service").values()),
    ]
    for selector in selecting:
        chosen = [
            name
            for name, d in DEPLOYMENTS.items()
            if _matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(chosen) == 1, (selector, chosen)
    budgets = {p["metadata"]["name"] for p in by_kind(MANIFESTS, "PodDisruptionBudget").values()}
    assert budgets == set(DEPLOYMENTS)


def _port_number(container: dict[str, Any], port: int | str) -> int:
    exposed = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, str):
        assert port in exposed, f"{container['name']} exposes no port named {port}"
        return int(exposed[port])
    assert port in exposed.values()
    return port


def test_probes_ask_health_of_the_port_the_process_listens_on() -> None:
    listens = {
        "feedbackflow-worker": "FEEDBACKFLOW_HTTP_PORT",
        "feedbackflow-gateway": "FEEDBACKFLOW_GATEWAY__PORT",
    }
    for name, deployment in DEPLOYMENTS.items():
        container = _container(deployment)
        variable = listens[name]
        literal = {e["name"]: e.get("value") for e in container.get("env", [])}
        port = int(literal[variable])
        for probe in ("readinessProbe", "livenessProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] == "/health", (name, probe)
            assert _port_number(container, check["port"]) == port, (name, probe)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == port
    gateway_env = {e["name"]: e.get("value") for e in _container(GATEWAY)["env"]}
    assert gateway_env["FEEDBACKFLOW_GATEWAY__HOST"] == "0.0.0.0"  # noqa: S104 - a pod's address
    (service,) = by_kind(MANIFESTS, "Service").values()
    for port in service["spec"]["ports"]:
        _port_number(_container(GATEWAY), port["targetPort"])


def test_every_config_map_it_names_is_generated() -> None:
    for manifest in MANIFESTS:
        for pod in pod_specs(manifest):
            names = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
            for container in containers(pod):
                names += [
                    s["configMapRef"]["name"]
                    for s in container.get("envFrom", [])
                    if "configMapRef" in s
                ]
            for name in names:
                assert name in CONFIG_MAPS, f"{manifest['metadata']['name']} names {name}"


def _secrets_the_readme_creates() -> dict[str, set[str]]:
    created: dict[str, set[str]] = {}
    for block in code_blocks(readme_section("Deploying"), "sh"):
        for match in re.finditer(
            r"kubectl create secret generic (\S+)((?:\s+\\?\s*--from-\S+)+)", block
        ):
            keys = set(re.findall(r"--from-(?:literal|file)=([^=\s]+)", match.group(2)))
            created[match.group(1)] = keys
    return created


def test_secrets_are_referenced_never_written_and_the_readme_creates_them() -> None:
    assert by_kind(MANIFESTS, "Secret") == {}
    created = _secrets_the_readme_creates()
    referenced = 0
    for owner, container in _all_containers():
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                referenced += 1
                assert ref["key"] in created.get(ref["name"], set()), (owner, ref)
            else:
                assert "value" in variable or "valueFrom" in variable
                assert "SECRET" not in variable["name"], (owner, variable["name"])
        for source in container.get("envFrom", []):
            ref = source.get("secretRef")
            if ref is not None and not ref.get("optional"):
                assert ref["name"] in created, (owner, ref)
    assert referenced >= 4  # database URL x3, token secret


def test_every_feedbackflow_variable_is_a_setting_and_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = settings_variables()
    env_map = next(cm for name, cm in CONFIG_MAPS.items() if name.startswith("feedbackflow-env"))
    for owner, container in _all_containers():
        literal = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        named = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                literal.update(CONFIG_MAPS[source["configMapRef"]["name"]]["data"])
        unknown = sorted(set(app_variables(dict.fromkeys(named | set(literal), ""))) - known)
        assert unknown == [], f"{owner} sets {unknown}, which workers/settings.py does not read"
        with monkeypatch.context() as env:
            for variable, value in app_variables(literal).items():
                env.setenv(variable, value)
            Settings()
    assert "FEEDBACKFLOW_KAFKA_BOOTSTRAP" in env_map["data"]


def test_the_config_map_is_the_repositorys_config_mounted_where_the_settings_look() -> None:
    config = next(cm for name, cm in CONFIG_MAPS.items() if name.startswith("feedbackflow-config"))
    env_map = next(cm for name, cm in CONFIG_MAPS.items() if name.startswith("feedbackflow-env"))
    shipped = (ROOT / "feedbackflow.toml").read_text(encoding="utf-8")
    assert config["data"]["feedbackflow.toml"] == shipped, (
        "cp feedbackflow.toml deploy/kubernetes/base/ (kustomize reads no file outside the base)"
    )
    path = env_map["data"]["FEEDBACKFLOW_CONFIG"]
    for owner, container in _all_containers():
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        directory, _, key = path.rpartition("/")
        assert directory in mounts, owner
        assert key in config["data"]


def test_a_worker_has_time_to_write_what_it_read_before_it_is_killed() -> None:
    toml = tomllib.loads((KUSTOMIZE_BASE / "feedbackflow.toml").read_text(encoding="utf-8"))
    pipeline = PipelineSettings(**toml.get("pipeline", {}))
    needed = pipeline.revoke_flush_seconds + (
        pipeline.windows_in_flight * WINDOW_WRITE_ALLOWANCE_SECONDS
    )
    grace = WORKER["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > needed


def test_no_more_workers_than_partitions_and_updates_never_add_one() -> None:
    partitions = KafkaSettings().partitions  # what `feedbackflow topics` and the worker create
    assert 1 <= WORKER["spec"]["replicas"] <= partitions
    assert WORKER["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_pods_run_as_the_images_user_with_resources_set() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert user is not None
    for manifest in MANIFESTS:
        for pod in pod_specs(manifest):
            context = pod["securityContext"]
            assert context["runAsNonRoot"] is True
            assert (context["runAsUser"], context["runAsGroup"]) == tuple(map(int, user.groups()))
            for container in containers(pod):
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
                assert "memory" in resources["limits"], container["name"]
                assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_images_carry_the_projects_version_and_the_job_migrates() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {container["image"] for _, container in _all_containers()}
    assert images == {f"feedbackflow:{version}"}
    (job,) = by_kind(MANIFESTS, "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["feedbackflow", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # so the next apply can create it again
