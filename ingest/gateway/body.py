"""Reading a request's JSON body without trusting it: size, content type, encoding, depth.

A body is read in chunks and refused (413) as soon as it passes the limit, so a huge upload
costs the limit, not the upload.  It is parsed by jiter, which refuses what the worker would
dead-letter anyway (invalid UTF-8, NaN, a key given twice) and bounds nesting, so a body of ten
thousand ``[`` answers 400 instead of exhausting the stack.
"""

from __future__ import annotations

from typing import Any

import jiter
from starlette.requests import Request

from ingest.gateway.errors import Refusal, bad_request

JSON_TYPES = ("application/json",)


def _check_content_type(request: Request) -> None:
    given = request.headers.get("content-type", "")
    media_type = given.split(";", 1)[0].strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        shown = given or "none"
        raise Refusal(415, "Content-Type", f"send application/json (got {shown})")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes (else 413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, "(body)", f"{declared} bytes; at most {limit} are taken")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal(413, "(body)", f"more than {limit} bytes; at most {limit} are taken")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise bad_request("(body)", "empty; send a JSON object")
    try:
        return jiter.from_json(
            raw, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="none"
        )
    except ValueError as exc:
        message = str(exc)
        if message.startswith("Detected duplicate key"):
            key = message.split('"')[1] if '"' in message else "(key)"
            return_reason = f"{message}: a JSON object names each key once"
            raise bad_request(key, return_reason) from None
        raise bad_request("(body)", f"invalid JSON: {message}") from None


async def json_object(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body and the JSON object it holds, or the refusal saying what is wrong."""
    _check_content_type(request)
    raw = await read_body(request, limit)
    parsed = parse_json(raw)
    if not isinstance(parsed, dict):
        raise bad_request("(body)", f"must be a JSON object, got {json_kind(parsed)}")
    return raw, parsed


def json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string"}.get(type(value), "a number")
