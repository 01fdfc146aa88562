"""Service API keys, stored hashed with their scopes (``feedbackflow keys``, the gateway).

A key reads ``ffk_<key id>_<secret>``: the id finds the row, the secret is compared by its
SHA-256 in constant time.  The whole key is printed once, at creation, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

PREFIX = "ffk_"
SCOPES = ("predictions", "feedback", "admin")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, scope: str) -> bool:
        """``admin`` holds every scope."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class StoredKey:
    """A key's row as the gateway checks it: the metadata and the secret's hash."""

    key: ApiKey
    secret_hash: bytes


def split_key(presented: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a key in its printed form, or None if it is not one."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


def key_id_of(given: str) -> str:
    """The id of a key given whole (``ffk_<id>_<secret>``) or by its id."""
    return given.removeprefix(PREFIX).partition("_")[0]


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(stored: StoredKey, secret: str) -> bool:
    return hmac.compare_digest(stored.secret_hash, secret_hash(secret))


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    wrong = sorted(set(scopes) - set(SCOPES))
    if wrong or not scopes:
        raise ValueError(f"scopes: {wrong or 'none given'}; choose from {', '.join(SCOPES)}")
    return sorted(set(scopes))


def _row_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        row["key_id"], row["name"], frozenset(row["scopes"]), row["created_at"], row["revoked_at"]
    )


async def create_key(conn: asyncpg.Connection, name: str, scopes: Sequence[str]) -> str:
    """A new key, returned whole: the only time it is seen."""
    if not name.strip():
        raise ValueError("name: give the key a name saying who uses it")
    checked = _check_scopes(scopes)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO feedbackflow.api_keys (key_id, name, secret_hash, scopes)"
        " VALUES ($1, $2, $3, $4)",
        key_id,
        name,
        secret_hash(secret),
        checked,
    )
    return f"{PREFIX}{key_id}_{secret}"


async def list_keys(conn: asyncpg.Connection) -> list[ApiKey]:
    rows = await conn.fetch(
        "SELECT key_id, name, scopes, created_at, revoked_at FROM feedbackflow.api_keys"
        " ORDER BY created_at, key_id"
    )
    return [_row_key(row) for row in rows]


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> bool:
    """Whether a key was revoked now (False: no such key, or revoked before)."""
    status = await conn.execute(
        "UPDATE feedbackflow.api_keys SET revoked_at = now()"
        " WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    return bool(status.endswith(" 1"))


async def find_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> StoredKey | None:
    row = await conn.fetchrow(
        "SELECT key_id, name, scopes, created_at, revoked_at, secret_hash"
        " FROM feedbackflow.api_keys WHERE key_id = $1",
        key_id,
    )
    return None if row is None else StoredKey(_row_key(row), bytes(row["secret_hash"]))
