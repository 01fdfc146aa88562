"""What valid JSON may carry that the wire contract or Postgres cannot, found at decode.

Each of these used to pass validation and then either fail its window's transaction for ever
(the NUL character, non-finite numbers: Postgres's jsonb takes neither) or lose data silently
(a duplicate key: the parser keeps the last).  Each becomes a dead letter naming the field.

Every check has a cheap test that runs for every event and a precise one that runs only when
the cheap one fires: the cheap test never misses what it guards against, and a false alarm only
costs the precise look (docs/performance.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jiter
from pydantic import BaseModel

from ingest.metrics.registry import FieldError

# JSON can carry the NUL character only as this escape (raw control characters are invalid
# JSON).  A payload without a backslash cannot hold it (one memchr); one with the escape's
# bytes is searched for a real NUL, since the bytes may also be an escaped backslash.
BACKSLASH = ord("\\")
NUL_ESCAPE = b"\\u0000"
# pydantic-core writes a non-finite float back out as one of these bare literals (and reads
# 1e400 as infinity): a JSON text that it encoded without them holds no non-finite number.
NAN, INFINITY = b"NaN", b"Infinity"
# Every member of a JSON object is its key's closing quote and a colon.  Outside a member the
# pair occurs only inside a string, as an escaped quote before a colon, which the canonical
# encoding of the same string keeps.  So a payload with more of them than the canonical
# encoding of what was parsed from it had a member the parser dropped: a duplicate key.
MEMBER = b'":'


def reject_nul(event: BaseModel) -> None:
    where = _first(event.model_dump(), "", lambda v: isinstance(v, str) and "\x00" in v)
    if where is not None:
        raise FieldError(
            where or "(event)",
            "contains the NUL character (\\u0000), which Postgres cannot store in text or jsonb",
        )


def reject_non_finite(value: object, path: str) -> None:
    """``value`` was encoded with a NaN or Infinity literal: name the number's place."""
    where = _first(value, path, lambda v: isinstance(v, float) and not math.isfinite(v))
    if where is not None:
        raise FieldError(
            where,
            "is not a finite number (NaN, Infinity or beyond 1.8e308), which JSON in Postgres "
            "cannot store",
        )


def check_members(raw: bytes, members: int, canonical: int) -> None:
    """``raw`` has ``members`` where what was parsed from it has ``canonical``: the count may
    be off for want of a canonical spelling (a space before a colon, an escaped quote before a
    colon in a top-level string), or for a key the parser dropped.  Find it if there is one."""
    if members != canonical:
        reject_duplicate_keys(raw)


def reject_duplicate_keys(raw: bytes) -> None:
    """Name the key that came twice in ``raw``, if one did."""
    try:
        jiter.from_json(raw, catch_duplicate_keys=True, cache_mode="none")
    except ValueError as exc:
        message = str(exc)
        if message.startswith("Detected duplicate key"):
            key = message.split('"')[1] if '"' in message else "(key)"
            raise FieldError(
                key, f"{message}: a JSON object names each key once (the parser kept the last)"
            ) from None


def _first(value: object, path: str, bad: Callable[[object], bool]) -> str | None:
    """The path of the first value (or key) that is ``bad``, depth first, else None."""
    if bad(value):
        return path
    items: list[tuple[str, object]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{printable(str(key))}" if path else printable(str(key))
            if bad(key):
                return where
            items.append((where, item))
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    for where, item in items:
        found = _first(item, where, bad)
        if found is not None:
            return found
    return None


def printable(text: str) -> str:
    """Text for a dead letter's columns: a NUL spelled as its JSON escape."""
    return text.replace("\x00", "\\u0000")
