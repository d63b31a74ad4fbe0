"""Accounts: passwords (argon2), bearer tokens with expiry and revocation, login throttling, users.

Tokens are opaque random strings; only their SHA-256 is stored (``auth_tokens``), so a leaked
table does not leak sessions. A token is valid while unexpired, unrevoked and its user enabled;
disabling a user or resetting their password revokes every token they hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.errors import Conflict, InvalidCredentials, InvalidInput, NotFound, TooManyAttempts
from geo.pg import Statement, raw_connection

if TYPE_CHECKING:
    from cases.token_cache import TokenCache

# The roles of the CHECK on users.roles (lifecycle.md, Roles).
ROLES: Final = ("collector", "operator", "supervisor", "unit", "planner", "admin")

# OWASP's argon2id minimum (19 MiB, t=2, p=1): ~25 ms a hash, so sign-in stays cheap.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# A hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(8))

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=5)
MIN_PASSWORD_LENGTH = 10


class UsernameTaken(Conflict):
    code = "username_taken"
    title = "The username is taken"


class SelfLockout(Conflict):
    code = "self_lockout"
    title = "An administrator cannot lock themselves out"


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
    """The signed-in caller. ``unit_id``/``unit_code``: the responsible unit a ``unit`` user acts for."""

    id: int
    username: str
    display_name: str
    roles: frozenset[str]
    unit_id: int | None
    unit_code: str | None = None

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


# The unit join is on a primary key: it costs nothing and saves visibility checks a lookup.
_PRINCIPAL_COLUMNS = "u.id, u.username, u.display_name, u.roles, u.unit_id, un.code AS unit_code"
_PRINCIPAL_FROM = "users u LEFT JOIN units un ON un.id = u.unit_id"


def _principal(row: Any) -> Principal:
    return Principal(row.id, row.username, row.display_name, frozenset(row.roles), row.unit_id, row.unit_code)


# --- sign-in -------------------------------------------------------------------------------


async def authenticate(session: AsyncSession, username: str, password: str, address: str) -> Principal:
    """Check a password; after ``MAX_FAILURES`` failures of one (username, address) pair within
    ``FAILURE_WINDOW`` that pair is refused (``TooManyAttempts``, with ``retry_after_s``) even
    with the right password. Other users and other addresses are not affected.

    Attempts of one pair are serialised by a transaction-scoped advisory lock, so parallel
    guesses cannot all read the same count and slip past the limit; the lock is released when
    the caller commits or rolls back. Refused attempts are not recorded as failures, so the
    lock-out ends ``FAILURE_WINDOW`` after the fifth failure.
    """
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('citygrid.login/' || :u || '/' || :a, 0))"),
        {"u": username, "a": address},
    )
    window_s = FAILURE_WINDOW.total_seconds()
    # clock_timestamp(), not now(): the transaction may have waited for the lock.
    recent = (
        await session.execute(
            text(
                "SELECT count(*) AS n, "
                "extract(epoch FROM min(at) + make_interval(secs => :w) - clock_timestamp()) AS left_s "
                "FROM (SELECT at FROM login_failures WHERE username = :u AND address = :a "
                "      AND at > clock_timestamp() - make_interval(secs => :w) ORDER BY at DESC LIMIT :n) r"
            ),
            {"u": username, "a": address, "w": window_s, "n": MAX_FAILURES},
        )
    ).one()
    if recent.n >= MAX_FAILURES:
        raise TooManyAttempts(
            f"{MAX_FAILURES} failed sign-ins for this user from this address; try again later",
            retry_after_s=max(1, math.ceil(recent.left_s)),
        )
    row = (
        await session.execute(
            text(
                f"SELECT {_PRINCIPAL_COLUMNS}, u.password_hash FROM {_PRINCIPAL_FROM} "
                "WHERE u.username = :u AND NOT u.disabled"
            ),
            {"u": username},
        )
    ).first()
    # argon2 releases the GIL: hashing in a thread keeps the event loop serving other requests.
    ok = await asyncio.to_thread(verify_password, row.password_hash if row else None, password)
    if row is None or not ok:
        await session.execute(
            text("INSERT INTO login_failures (username, address, at) VALUES (:u, :a, clock_timestamp())"),
            {"u": username, "a": address},
        )
        await session.commit()
        raise InvalidCredentials("wrong username or password")
    # A success forgives the pair's failures; expired rows of everyone are swept on the way.
    await session.execute(
        text(
            "DELETE FROM login_failures WHERE (username = :u AND address = :a) "
            "OR at < clock_timestamp() - make_interval(secs => :w)"
        ),
        {"u": username, "a": address, "w": window_s},
    )
    return _principal(row)


# --- tokens --------------------------------------------------------------------------------


async def issue_token(session: AsyncSession, user_id: int, ttl_s: int) -> str:
    token = secrets.token_urlsafe(32)
    await session.execute(
        text("INSERT INTO auth_tokens (token_hash, user_id, expires_at) VALUES (:h, :u, :e)"),
        {"h": _token_hash(token), "u": user_id, "e": datetime.now(UTC) + timedelta(seconds=ttl_s)},
    )
    return token


_BY_TOKEN = Statement(
    f"SELECT {_PRINCIPAL_COLUMNS}, t.expires_at FROM {_PRINCIPAL_FROM} JOIN auth_tokens t ON t.user_id = u.id "
    "WHERE t.token_hash = :h AND t.revoked_at IS NULL AND t.expires_at > now() AND NOT u.disabled"
)


async def principal_for_token(
    session: AsyncSession, token: str, cache: TokenCache | None = None
) -> Principal | None:
    """The enabled user holding ``token`` if it is neither expired nor revoked.

    Every signed-in request asks this: from ``cache`` when it knows the token, else on the
    driver connection (``geo.pg``).
    """
    key = _token_hash(token)
    if cache is not None and (known := cache.get(key)) is not None:
        return known
    generation = cache.generation if cache is not None else 0
    row = await _BY_TOKEN.fetchrow(await raw_connection(session), {"h": key})
    if row is None:
        return None
    principal = _principal(SimpleNamespace(**row))
    if cache is not None:
        cache.put(key, principal, row["expires_at"], generation)
    return principal


async def revoke_token(session: AsyncSession, token: str) -> None:
    await session.execute(
        text("UPDATE auth_tokens SET revoked_at = now() WHERE token_hash = :h AND revoked_at IS NULL"),
        {"h": _token_hash(token)},
    )


async def revoke_user_tokens(session: AsyncSession, user_id: int) -> int:
    """Revoke every live token of a user; the number revoked."""
    result = await session.execute(
        text(
            "UPDATE auth_tokens SET revoked_at = now() "
            "WHERE user_id = :u AND revoked_at IS NULL AND expires_at > now()"
        ),
        {"u": user_id},
    )
    return result.rowcount


# --- user administration (系统管理) -----------------------------------------------------------

_USER_SELECT = (
    "SELECT u.id, u.username, u.display_name, u.roles, u.disabled, u.created_at, u.updated_at, "
    "un.code AS unit_code, un.name AS unit_name FROM users u LEFT JOIN units un ON un.id = u.unit_id"
)


def _user(row: Any) -> dict[str, Any]:
    # Never the password hash.
    return {
        "id": row.id,
        "username": row.username,
        "display_name": row.display_name,
        "roles": sorted(row.roles),
        "unit": {"code": row.unit_code, "name": row.unit_name} if row.unit_code else None,
        "disabled": row.disabled,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(frozen=True)
class NewUser:
    username: str
    display_name: str
    roles: frozenset[str]
    password: str
    unit: str | None = None  # unit code; required iff "unit" in roles


@dataclass(frozen=True)
class UserChanges:
    """A partial update: ``None`` (or ``UNSET`` for ``unit``, which may be cleared) keeps a field."""

    display_name: str | None = None
    roles: frozenset[str] | None = None
    unit: str | _Unset | None = field(default=UNSET)
    disabled: bool | None = None


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the password needs at least {MIN_PASSWORD_LENGTH} characters",
            errors=[{"field": "password", "message": f"at least {MIN_PASSWORD_LENGTH} characters"}],
        )


async def _unit_for(session: AsyncSession, roles: frozenset[str], unit: str | None) -> int | None:
    """The id of the unit a user with ``roles`` is bound to: required for, and only for, ``unit``."""
    unknown = roles.difference(ROLES)
    if not roles or unknown:
        raise InvalidInput(
            "roles must be a non-empty subset of " + ", ".join(ROLES),
            errors=[
                {
                    "field": "roles",
                    "message": f"unknown roles: {', '.join(sorted(unknown))}"
                    if unknown
                    else "at least one role",
                }
            ],
        )
    if "unit" not in roles:
        if unit is not None:
            raise InvalidInput(
                "only a user with the role unit is bound to a unit",
                errors=[{"field": "unit", "message": "only for the role unit"}],
            )
        return None
    if unit is None:
        raise InvalidInput(
            "a user with the role unit must name their unit",
            errors=[{"field": "unit", "message": "required for the role unit"}],
        )
    unit_id = await session.scalar(text("SELECT id FROM units WHERE code = :c AND active"), {"c": unit})
    if unit_id is None:
        raise InvalidInput(f"no active unit {unit!r}", errors=[{"field": "unit", "message": "unknown unit"}])
    return unit_id


async def _user_by_name(session: AsyncSession, username: str) -> dict[str, Any]:
    row = (await session.execute(text(f"{_USER_SELECT} WHERE u.username = :u"), {"u": username})).first()
    if row is None:
        raise NotFound(f"no user {username!r}")
    return _user(row)


async def get_user(session: AsyncSession, username: str) -> dict[str, Any]:
    return await _user_by_name(session, username)


async def list_users(
    session: AsyncSession,
    role: str | None = None,
    unit: str | None = None,
    disabled: bool | None = None,
    limit: int = 500,
    offset: int = 0,
) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            f"{_USER_SELECT} WHERE (CAST(:r AS text) IS NULL OR CAST(:r AS text) = ANY (u.roles)) "
            "AND (CAST(:c AS text) IS NULL OR un.code = :c) "
            "AND (CAST(:d AS boolean) IS NULL OR u.disabled = :d) "
            "ORDER BY u.username LIMIT :l OFFSET :o"
        ),
        {"r": role, "c": unit, "d": disabled, "l": limit, "o": offset},
    )
    return [_user(r) for r in rows]


async def create_user(session: AsyncSession, new: NewUser) -> dict[str, Any]:
    """Create a user (input 422 before the duplicate username 409). The caller commits."""
    _check_password(new.password)
    unit_id = await _unit_for(session, new.roles, new.unit)
    password_hash = await asyncio.to_thread(hash_password, new.password)
    # ON CONFLICT rather than a prior SELECT: two racing creations get one 201 and one 409.
    user_id = await session.scalar(
        text(
            "INSERT INTO users (username, display_name, password_hash, roles, unit_id) "
            "VALUES (:u, :d, :h, :r, :unit) ON CONFLICT (username) DO NOTHING RETURNING id"
        ),
        {
            "u": new.username,
            "d": new.display_name,
            "h": password_hash,
            "r": sorted(new.roles),
            "unit": unit_id,
        },
    )
    if user_id is None:
        raise UsernameTaken(f"the username {new.username!r} is taken")
    return await _user_by_name(session, new.username)


async def _lock_user(session: AsyncSession, username: str) -> Any:
    # FOR UPDATE: concurrent edits of one user apply one after the other, each on the latest row.
    row = (
        await session.execute(
            text(
                "SELECT u.id, u.roles, u.disabled, un.code AS unit_code FROM users u "
                "LEFT JOIN units un ON un.id = u.unit_id WHERE u.username = :u FOR UPDATE OF u"
            ),
            {"u": username},
        )
    ).first()
    if row is None:
        raise NotFound(f"no user {username!r}")
    return row


async def update_user(
    session: AsyncSession, username: str, changes: UserChanges, actor_id: int | None = None
) -> dict[str, Any]:
    """Apply a partial update. Disabling revokes every token of the user. Dropping the role
    ``unit`` without naming a unit unbinds the user from theirs. ``actor_id``: the administrator
    making the change, who may not disable themselves or drop their own ``admin`` role.
    The caller commits."""
    current = await _lock_user(session, username)
    roles = changes.roles if changes.roles is not None else frozenset(current.roles)
    unit = changes.unit
    if isinstance(unit, _Unset):  # kept, unless the role that needs it is gone
        unit = current.unit_code if "unit" in roles else None
    unit_id = await _unit_for(session, roles, unit)
    disabled = current.disabled if changes.disabled is None else changes.disabled
    if current.id == actor_id and (disabled or "admin" not in roles):
        raise SelfLockout("you cannot disable your own account or drop your own admin role")
    await session.execute(
        text(
            "UPDATE users SET display_name = coalesce(:d, display_name), roles = :r, unit_id = :unit, "
            "disabled = :x, updated_at = now() WHERE id = :id"
        ),
        {"d": changes.display_name, "r": sorted(roles), "unit": unit_id, "x": disabled, "id": current.id},
    )
    if disabled:
        await revoke_user_tokens(session, current.id)
    return await _user_by_name(session, username)


async def reset_password(session: AsyncSession, username: str, password: str) -> None:
    """Set a new password and revoke every token of the user (theirs to sign in again).
    The caller commits."""
    current = await _lock_user(session, username)
    _check_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    await session.execute(
        text("UPDATE users SET password_hash = :h, updated_at = now() WHERE id = :id"),
        {"h": password_hash, "id": current.id},
    )
    await revoke_user_tokens(session, current.id)
