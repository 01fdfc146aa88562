"""Who may write: service API keys with scopes, and end-user feedback tokens.

``Authorization: Bearer <credential>`` carries either.  An API key (``ffk_...``,
``workers.postgres.api_keys``) is looked up in Postgres and trusted for ``key_cache_seconds``, so
a revoked key stops working within that without a restart, and a busy gateway asks the database
once per key per interval, not once per request.  A feedback token (a JWT,
``ingest.sdk.tokens``) needs no look-up: its signature and claims are the grant.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ingest.gateway.errors import Refusal
from ingest.sdk.tokens import FeedbackGrant, TokenRefused, read_feedback_token
from workers.postgres.api_keys import ApiKey, StoredKey, secret_matches, split_key

KeyLookup = Callable[[str], Awaitable[StoredKey | None]]

# When the database cannot be asked about a key, callers are told to come back after this.
DATABASE_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a service's key, a browser's token, or anyone (auth off)."""

    name: str
    key: ApiKey | None = None
    grant: FeedbackGrant | None = None

    def require(self, scope: str) -> None:
        if self.grant is not None:
            if scope != "feedback":
                raise Refusal(403, "Authorization", f"a feedback token cannot write {scope}")
            return
        if self.key is not None and not self.key.allows(scope):
            raise Refusal(
                403,
                "Authorization",
                f"API key {self.key.key_id!r} ({self.key.name}) lacks the scope {scope!r}",
            )


ANYONE = Caller("anonymous")


def unauthorized(reason: str) -> Refusal:
    return Refusal(401, "Authorization", reason)


class Gatekeeper:
    def __init__(
        self,
        *,
        enabled: bool,
        lookup: KeyLookup,
        token_secret: str | None,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.token_secret = token_secret
        self._lookup, self._cache_seconds, self._clock = lookup, cache_seconds, clock
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}

    async def caller(self, authorization: str | None, *, tokens_allowed: bool = False) -> Caller:
        """The caller a request's ``Authorization`` header names, or a 401 saying why not."""
        if not self.enabled:
            return ANYONE
        if not authorization:
            raise unauthorized("missing; send Authorization: Bearer <API key>")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise unauthorized("use the Bearer scheme: Authorization: Bearer <API key>")
        parts = split_key(credential)
        if parts is not None:
            return await self._key_caller(*parts)
        if credential.count(".") == 2:
            if not tokens_allowed:
                raise unauthorized("a feedback token is taken only by POST /v1/feedback")
            return Caller("token", grant=self._grant(credential))
        raise unauthorized("not an API key (ffk_...) or a feedback token")

    def _grant(self, token: str) -> FeedbackGrant:
        if self.token_secret is None:
            raise unauthorized(
                "feedback tokens are not enabled on this gateway "
                "(FEEDBACKFLOW_GATEWAY__TOKEN_SECRET is unset)"
            )
        try:
            return read_feedback_token(self.token_secret, token)
        except TokenRefused as exc:
            raise unauthorized(str(exc)) from None

    async def _key_caller(self, key_id: str, secret: str) -> Caller:
        stored = await self._stored(key_id)
        if stored is None or not secret_matches(stored, secret):
            raise unauthorized("unknown API key")
        if stored.key.revoked_at is not None:
            raise unauthorized(f"API key {key_id!r} was revoked")
        return Caller(f"key:{key_id}", key=stored.key)

    async def _stored(self, key_id: str) -> StoredKey | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            stored = await self._lookup(key_id)
        except (OSError, ConnectionError) as exc:
            raise Refusal(
                503,
                "Authorization",
                f"cannot check the API key now: the database is unavailable ({exc})",
                retry_after=DATABASE_RETRY_SECONDS,
            ) from None
        if len(self._cache) > 10_000:  # wrong keys must not grow it without bound
            self._cache.clear()
        self._cache[key_id] = (now, stored)
        return stored
