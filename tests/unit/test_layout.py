"""The layout's promises, checked on the source: layers import only downwards, no cycles, and
nothing imports the CLI (docs/architecture.md, "Reading order")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "workers")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the product and the product modules it imports, anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module)
                    imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            graph[_module_name(path)] = {m for m in imported if m.split(".")[0] in PACKAGES}
    return {name: {m for m in deps if m in graph} - {name} for name, deps in graph.items()}


GRAPH = _imports()


def _importers_of(prefix: str) -> set[str]:
    return {
        name
        for name, deps in GRAPH.items()
        if not name.startswith(prefix) and any(d.startswith(prefix) for d in deps)
    }


def test_the_graph_is_read() -> None:
    assert "workers.stream.consumer_loop" in GRAPH
    assert "workers.stream.chain" in GRAPH["workers.stream.consumer_loop"]


def test_nothing_imports_the_cli() -> None:
    assert _importers_of("workers.cli") == set()


def test_there_are_no_import_cycles() -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for dep in sorted(GRAPH[name]):
            # A package imports its own modules (its __init__ may); that is not a cycle.
            if not dep.startswith(name + "."):
                visit(dep, [*path, name])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [])


def test_the_contract_depends_on_nothing_of_the_workers() -> None:
    for layer in ("ingest.wire", "ingest.metrics", "ingest.topics", "ingest.sdk"):
        for name, deps in GRAPH.items():
            if name.startswith(layer):
                assert not [d for d in deps if d.startswith("workers")], name


def test_the_stream_knows_no_storage_and_no_host() -> None:
    for name, deps in GRAPH.items():
        if name.startswith("workers.stream"):
            below = ("workers.postgres", "workers.host", "workers.devstack", "workers.testing")
            assert not [d for d in deps if d.startswith(below)], name


def test_only_the_cli_and_the_devstack_itself_use_the_devstack() -> None:
    assert _importers_of("workers.devstack") == {"workers.cli"}


def test_the_dashboards_import_only_the_read_models_queries_and_only_the_cli_imports_them() -> None:
    """Their SQL panels are the read model's queries; nothing else of the product is theirs."""
    for name, deps in GRAPH.items():
        if name.startswith("workers.dashboards"):
            others = {d for d in deps if not d.startswith("workers.dashboards")}
            assert others <= {"workers.read_model", "workers.read_model.queries"}, name
    assert _importers_of("workers.dashboards") == {"workers.cli"}
