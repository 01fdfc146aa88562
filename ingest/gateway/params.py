"""Query parameters and headers, read straight from the request.

The routes do not declare them as FastAPI parameters: FastAPI's dependency solving cost a third
of a small request's time in the gateway (docs/performance.md, "The HTTP gateway"), for three
strings.  They are documented in the OpenAPI document instead (``ingest.gateway.openapi``), and a
bad value is a 400 naming it, like every other mistake.
"""

from __future__ import annotations

from starlette.requests import Request

from ingest.gateway.errors import bad_request

_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise bad_request(name, f"must be true or false, got {value!r}")


def positive_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) == 0:
        raise bad_request(name, f"must be a positive whole number, got {value!r}")
    return int(value)


def header(request: Request, name: str) -> str | None:
    return request.headers.get(name)
