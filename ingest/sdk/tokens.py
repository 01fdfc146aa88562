"""End-user feedback tokens: a signed, expiring grant to post feedback on one prediction.

Like LangSmith's presigned feedback URLs: the service that made a prediction hands the page that
shows it a token; the browser posts thumbs or stars with only that token, which cannot be
stretched to another prediction or metric.  A token is a standard JWT (HS256, PyJWT), so any
language can mint one with the shared secret; the claims are the contract:

- ``sub``: the prediction id; ``aud``: ``feedbackflow:feedback``; ``iss``: ``feedbackflow``
- ``metrics``: the metric names the holder may post
- ``exp`` and ``iat``: expiry and issue time, seconds since the epoch
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import jwt

AUDIENCE = "feedbackflow:feedback"
ISSUER = "feedbackflow"
ALGORITHM = "HS256"
# HS256 keys shorter than the hash are guessable offline from one token (RFC 7518, 3.2).
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class FeedbackGrant:
    """What a valid token allows."""

    prediction_id: UUID
    metrics: frozenset[str]
    expires_at: int


class TokenRefused(ValueError):
    """The token is not one this secret signed, is expired, or is malformed; says which."""


def _key(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"token secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def mint_feedback_token(
    secret: str,
    prediction_id: UUID | str,
    metrics: list[str] | tuple[str, ...],
    ttl: timedelta = timedelta(days=1),
    *,
    now: float | None = None,
) -> str:
    """A token that lets its holder post ``metrics`` feedback on ``prediction_id`` for ``ttl``."""
    if not metrics:
        raise ValueError("metrics: a token must name at least one metric")
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(UUID(str(prediction_id))),
        "metrics": sorted(set(metrics)),
        "iat": issued,
        "exp": issued + max(1, int(ttl.total_seconds())),
    }
    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)


def read_feedback_token(secret: str, token: str) -> FeedbackGrant:
    """The grant a token carries, or ``TokenRefused`` saying why not."""
    try:
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("the feedback token has expired") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("the feedback token's signature does not match") from None
    except jwt.PyJWTError as exc:
        raise TokenRefused(f"not a valid feedback token: {exc}") from None
    metrics = claims.get("metrics")
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise TokenRefused("not a valid feedback token: 'metrics' must be a list of names")
    try:
        prediction_id = UUID(str(claims["sub"]))
    except ValueError:
        raise TokenRefused("not a valid feedback token: 'sub' is not a prediction id") from None
    return FeedbackGrant(prediction_id, frozenset(metrics), int(claims["exp"]))
