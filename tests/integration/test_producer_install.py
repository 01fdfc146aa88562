"""A service that only produces installs ``pip install feedbackflow``: the SDK must import and
work with the base dependencies alone, without faust, asyncpg, FastAPI or the dev stack (the
``server``, ``embedded`` and ``dev`` extras).

A fresh interpreter is given only what a base install would have: every module of a
distribution outside the base dependencies' closure (and this distribution's ``workers``
side) fails to import, as it would if it were not installed; optional imports (pyjwt's
``cryptography``, jsonschema's format checkers) fall back as they do there.  In it the SDK
logs a prediction and its feedback to the suite's broker and a join key and a token are
made."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

from packaging.requirements import Requirement

from workers.devstack.servers import TansuBroker

_AS_IF_ONLY_THE_BASE = """
import asyncio, importlib.abc, json, sys

BLOCKED = set(json.loads(sys.argv[1]))
AT_START = {m.split(".")[0] for m in sys.modules}  # the interpreter's own (.pth files)


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in a base install)")
        return None


sys.meta_path.insert(0, NotInstalled())

from ingest.sdk.join_keys import JoinKey
from ingest.sdk.producer import FeedbackflowProducer
from ingest.sdk.tokens import mint_feedback_token


async def produce():
    async with FeedbackflowProducer(sys.argv[2], idempotent=False) as ff:
        p = await ff.log_prediction(application="generate_haiku", outputs={"haiku": "..."})
        await ff.log_feedback(metric="comment", prediction_id=p.prediction_id, value="ok")
        await ff.flush()
    return p


prediction = asyncio.run(produce())
mint_feedback_token("s" * 32, prediction.prediction_id, ["haiku_rating"])
print(JoinKey.from_dict({"user": 42}))
print(json.dumps(sorted(BLOCKED & ({m.split(".")[0] for m in sys.modules} - AT_START))))
"""


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def _base_closure() -> set[str]:
    """Distributions the base dependencies pull in (no extras), normalised names."""
    seen: set[str] = set()
    todo = [
        Requirement(r)
        for r in importlib.metadata.requires("feedbackflow") or []
        if Requirement(r).marker is None
    ]
    while todo:
        requirement = todo.pop()
        if _normal(requirement.name) in seen:
            continue
        seen.add(_normal(requirement.name))
        for nested in importlib.metadata.requires(requirement.name) or []:
            parsed = Requirement(nested)
            if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                todo.append(parsed)
    return seen


def not_in_a_base_install() -> set[str]:
    """Top-level modules a base install would not have."""
    allowed = _base_closure() | {"feedbackflow"}
    blocked = {"workers"}
    for module, distributions in importlib.metadata.packages_distributions().items():
        if not any(_normal(d) in allowed for d in distributions):
            blocked.add(module)
    return blocked - set(sys.stdlib_module_names)


def test_the_sdk_produces_with_only_the_base_dependencies(kafka: TansuBroker) -> None:
    blocked = not_in_a_base_install()
    assert {"faust", "asyncpg", "fastapi", "uvicorn", "prometheus_client", "workers"} <= blocked
    result = subprocess.run(
        [sys.executable, "-c", _AS_IF_ONLY_THE_BASE, json.dumps(sorted(blocked)), kafka.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    join_key, leaked = result.stdout.splitlines()
    assert join_key.startswith("jk1_")
    assert json.loads(leaked) == []


def test_a_server_import_fails_there() -> None:
    """The check itself: faust, which the worker needs, is not there."""
    code = _AS_IF_ONLY_THE_BASE.split("from ingest.sdk")[0] + "import faust\n"
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sorted(not_in_a_base_install()))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "No module named 'faust' (not in a base install)" in result.stderr
