"""The deployment files read as their tools read them, without the tools: docker-compose.yml
with its variables interpolated, the kustomize base built, and the ``FEEDBACKFLOW_*`` variables
that the app's settings read.  No Docker engine and no kustomize binary run here (neither is
installable from Debian or PyPI), so the tests build what those would and check the result.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from workers.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
KUSTOMIZE_BASE = ROOT / "deploy" / "kubernetes" / "base"
README = ROOT / "README.md"

Manifest = dict[str, Any]

# --- settings ---------------------------------------------------------------------------------


def settings_variables() -> set[str]:
    """Every environment variable ``Settings`` reads: ``FEEDBACKFLOW_<FIELD>``, and for a nested
    model also ``FEEDBACKFLOW_<FIELD>__<SUBFIELD>`` (``env_nested_delimiter``)."""
    delimiter = Settings.model_config.get("env_nested_delimiter") or "__"
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(f"{ENV_PREFIX}{name}".upper())
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names.update(
                f"{ENV_PREFIX}{name}{delimiter}{sub}".upper() for sub in nested.model_fields
            )
    return names


def app_variables(environment: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environment.items() if k.upper().startswith(ENV_PREFIX)}


# --- docker-compose.yml -----------------------------------------------------------------------

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal $.
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """Compose's interpolation of ``${...}`` as `docker compose` does before parsing values;
    a required variable that is missing raises, as `docker compose up` refuses to start."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = environment.get(name)
        unset = value is None or (operator is not None and operator.startswith(":") and not value)
        if operator and operator.endswith("?") and unset:
            raise KeyError(f"{name}: {argument}")
        if operator and operator.endswith("-") and unset:
            return argument
        return value or ""

    return _VARIABLE.sub(substitute, text)


def compose_raw() -> dict[str, Any]:
    """The file as written (what the Compose Specification's schema describes)."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def compose(environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file after interpolation, as `docker compose up` sees it with only its defaults."""
    text = interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), environment or {})
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``NAME=value`` list) as strings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {name: value for name, _, value in pairs}
    return {name: "" if value is None else str(value) for name, value in environment.items()}


# --- the kustomize base -----------------------------------------------------------------------

# What this loader implements; a kustomization using more must extend it, not be half-read.
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator"}


def kustomize_build(base: Path = KUSTOMIZE_BASE) -> list[Manifest]:
    """`kustomize build base` for what the base uses: its resources, and ConfigMaps generated
    from files and literals under a content-hashed name that the pod specs are rewritten to."""
    kustomization: dict[str, Any] = yaml.safe_load(
        (base / "kustomization.yaml").read_text(encoding="utf-8")
    )
    unknown = set(kustomization) - _KUSTOMIZATION_KEYS
    if unknown:
        raise NotImplementedError(f"the test-side kustomize does not read {sorted(unknown)}")
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        text = (base / resource).read_text(encoding="utf-8")
        manifests.extend(document for document in yaml.safe_load_all(text) if document)
    renamed: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _generated_config_map(base, generator)
        renamed[generator["name"]] = config_map["metadata"]["name"]
        manifests.append(config_map)
    for manifest in manifests:
        for pod in pod_specs(manifest):
            _rename_config_maps(pod, renamed)
    return manifests


def _generated_config_map(base: Path, generator: Mapping[str, Any]) -> Manifest:
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, path = entry.rpartition("=")
        data[key or Path(path).name] = (base / path).read_text(encoding="utf-8")
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    # kustomize's suffix is a hash of the content: a changed file renames the ConfigMap.
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{generator['name']}-{digest}"},
        "data": data,
    }


def _rename_config_maps(pod: dict[str, Any], renamed: Mapping[str, str]) -> None:
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            volume["configMap"]["name"] = renamed.get(name, name)
    for container in containers(pod):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                name = source["configMapRef"]["name"]
                source["configMapRef"]["name"] = renamed.get(name, name)
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("configMapKeyRef")
            if ref is not None:
                ref["name"] = renamed.get(ref["name"], ref["name"])


def pod_specs(manifest: Manifest) -> Iterator[dict[str, Any]]:
    if manifest["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        yield manifest["spec"]["template"]["spec"]


def containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


# --- README -----------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    """The text of one ``## title`` section of the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
