"""Accounts: passwords (argon2), bearer tokens with expiry and revocation, login throttling."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.errors import InvalidCredentials, TooManyAttempts

# OWASP's argon2id minimum (19 MiB, t=2, p=1): ~25 ms a hash, so sign-in stays cheap.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# A hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=5)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Principal:
    """The signed-in caller."""

    id: int
    username: str
    display_name: str
    roles: frozenset[str]
    unit_id: int | None

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


_USER_COLUMNS = "u.id, u.username, u.display_name, u.roles, u.unit_id"


def _principal(row) -> Principal:
    return Principal(row.id, row.username, row.display_name, frozenset(row.roles), row.unit_id)


async def authenticate(session: AsyncSession, username: str, password: str, address: str) -> Principal:
    """Check a password; throttled per (username, address) after repeated failures."""
    since = datetime.now(UTC) - FAILURE_WINDOW
    failures = await session.scalar(
        text("SELECT count(*) FROM login_failures WHERE username = :u AND address = :a AND at > :s"),
        {"u": username, "a": address, "s": since},
    )
    if failures >= MAX_FAILURES:
        raise TooManyAttempts(
            f"{MAX_FAILURES} failed sign-ins for this user from this address; try again later",
            retry_after_s=int(FAILURE_WINDOW.total_seconds()),
        )
    row = (
        await session.execute(
            text(
                f"SELECT {_USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = :u AND NOT u.disabled"
            ),
            {"u": username},
        )
    ).first()
    if row is None or not verify_password(row.password_hash, password):
        await session.execute(
            text("INSERT INTO login_failures (username, address) VALUES (:u, :a)"),
            {"u": username, "a": address},
        )
        await session.commit()
        raise InvalidCredentials("wrong username or password")
    await session.execute(
        text("DELETE FROM login_failures WHERE (username = :u AND address = :a) OR at < :old"),
        {"u": username, "a": address, "old": since},
    )
    return _principal(row)


async def issue_token(session: AsyncSession, user_id: int, ttl_s: int) -> str:
    token = secrets.token_urlsafe(32)
    await session.execute(
        text("INSERT INTO auth_tokens (token_hash, user_id, expires_at) VALUES (:h, :u, :e)"),
        {"h": _token_hash(token), "u": user_id, "e": datetime.now(UTC) + timedelta(seconds=ttl_s)},
    )
    return token


async def principal_for_token(session: AsyncSession, token: str) -> Principal | None:
    row = (
        await session.execute(
            text(
                f"SELECT {_USER_COLUMNS} FROM auth_tokens t JOIN users u ON u.id = t.user_id "
                "WHERE t.token_hash = :h AND t.revoked_at IS NULL AND t.expires_at > now() "
                "AND NOT u.disabled"
            ),
            {"h": _token_hash(token)},
        )
    ).first()
    return _principal(row) if row else None


async def revoke_token(session: AsyncSession, token: str) -> None:
    await session.execute(
        text("UPDATE auth_tokens SET revoked_at = now() WHERE token_hash = :h AND revoked_at IS NULL"),
        {"h": _token_hash(token)},
    )
