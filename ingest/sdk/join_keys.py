"""Join keys computed from a dict of inputs (Gantry's ``JoinKey.from_dict``).

A service that cannot carry an id from its prediction to its feedback (the feedback arrives by
another path, days later) can compute the same key on both sides from what both know, e.g. the
request's inputs.  The key must be the same in every process and language, so it is defined on
a published canonical form, not on Python's ``repr`` or ``json.dumps``:

    join key = "jk1_" + the first 32 hex digits of SHA-256( JCS(value) )

where JCS is the JSON Canonicalization Scheme, RFC 8785 (sorted keys, no whitespace,
ECMAScript number spelling, UTF-8), implemented here by the ``rfc8785`` package and available
for Go, Java, JavaScript and others.  ``jk1`` names this definition; a different one would get
another prefix.  Test vectors: ``ingest/wire/join_key_vectors.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import rfc8785

PREFIX = "jk1_"
HEX_DIGITS = 32


def join_key_from_dict(value: Mapping[str, Any]) -> str:
    """The join key of a JSON object; ``ValueError`` naming why a value is not one."""
    if not isinstance(value, Mapping):
        raise ValueError(f"a join key is computed from a JSON object, got {type(value).__name__}")
    try:
        canonical = rfc8785.dumps(dict(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot compute a join key: {exc}") from None
    return PREFIX + hashlib.sha256(canonical).hexdigest()[:HEX_DIGITS]


class JoinKey:
    """Gantry's spelling: ``JoinKey.from_dict({"prompt": ..., "user": ...})``."""

    from_dict = staticmethod(join_key_from_dict)
