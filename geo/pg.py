"""The asyncpg connection under a SQLAlchemy session, and named-parameter statements on it.

Hot paths (the locator, the token check of every request, report submission) run their
statements on the driver connection: SQLAlchemy's per-statement work (parsing ``text()``,
cache keys, result wrapping) costs more there than the database round trip itself. The
statements stay in the session's transaction, so the session still commits or rolls back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a session (same transaction), for prepared statements."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


class Statement:
    """SQL written with ``:name`` parameters, turned once into asyncpg's ``$n`` form.

    asyncpg prepares and caches it per connection on first use.
    """

    def __init__(self, sql: str) -> None:
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.names:
                self.names.append(name)
            return f"${self.names.index(name) + 1}"

        self.sql = _NAMED.sub(number, sql)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]

    async def fetchrow(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> asyncpg.Record | None:
        return await conn.fetchrow(self.sql, *self.args(params))
