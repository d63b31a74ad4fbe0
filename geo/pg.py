"""The asyncpg connection under a SQLAlchemy session, named-parameter statements on it, and the
LISTEN connection that keeps in-memory copies of tables honest.

Hot paths (the locator, the token check of every request, report submission) run their
statements on the driver connection: SQLAlchemy's per-statement work (parsing ``text()``,
cache keys, result wrapping) costs more there than the database round trip itself. The
statements stay in the session's transaction, so the session still commits or rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)

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

    async def fetch(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        return await conn.fetch(self.sql, *self.args(params))


APPLICATION_NAME = "citygrid-listener"  # as pg_stat_activity shows the connection


class Listener:
    """One LISTEN connection for a process's in-memory copies of tables.

    Register ``on(channel, callback)`` (the callback gets the payload) and ``on_reset(callback)``
    before ``start``. ``live`` is True only while the connection listens; a copy must not be
    trusted otherwise, since notifications may have been missed. Reset callbacks run whenever
    the connection is lost or (re)made: drop everything copied. The connection is checked
    every ``check_s`` and remade after ``retry_s`` when lost.
    """

    def __init__(self, dsn: str, check_s: float = 15.0, retry_s: float = 1.0) -> None:
        self.dsn = dsn
        self.check_s = check_s
        self.retry_s = retry_s
        self._channels: dict[str, list[Callable[[str], None]]] = {}
        self._resets: list[Callable[[], None]] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()  # one query at a time on the connection
        self._down = asyncio.Event()  # set when the connection is lost: reconnect soon

    @property
    def live(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def on(self, channel: str, callback: Callable[[str], None]) -> None:
        self._channels.setdefault(channel, []).append(callback)

    def on_reset(self, callback: Callable[[], None]) -> None:
        self._resets.append(callback)

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self._reset()

    async def sync(self) -> None:
        """Return once the notifications of every transaction committed before the call have
        been handled: PostgreSQL sends them ahead of the answer to a query on this connection."""
        conn = self._conn
        if conn is not None:
            async with self._busy:
                await conn.fetchval("SELECT 1")

    def _reset(self) -> None:
        for callback in self._resets:
            callback()

    def _notified(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        for callback in self._channels.get(channel, ()):
            callback(payload)

    def _lost(self, conn: object) -> None:
        if conn is self._conn:
            self._conn = None
            self._reset()
            self._down.set()

    async def _connect(self) -> None:
        conn = None
        try:
            conn = await asyncpg.connect(self.dsn, server_settings={"application_name": APPLICATION_NAME})
            for channel in self._channels:
                await conn.add_listener(channel, self._notified)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("LISTEN connection failed; in-memory copies are off until it is back")
            if conn is not None:
                conn.terminate()
            return
        conn.add_termination_listener(self._lost)
        self._reset()  # whatever was copied before may have missed changes
        self._conn = conn

    async def _watch(self) -> None:
        while True:
            if self.live:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._down.wait(), self.check_s)
            conn = self._conn
            if conn is None:
                await asyncio.sleep(self.retry_s)
                self._down.clear()
                await self._connect()
                continue
            try:
                async with self._busy:
                    await conn.fetchval("SELECT 1", timeout=self.check_s)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._lost(conn)
                conn.terminate()
