"""The in-process copies of tokens' principals, the matter catalogue and the grid index (NOTIFY).

Changes are made with SQL on connections of their own, as another process would make them;
``Listener.sync`` waits for the notifications of what was committed before it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.admin_db import dsn
from api.copies import Copies
from api.db import Database
from api.settings import Settings
from cases.accounts import Principal
from geo.pg import APPLICATION_NAME, Listener
from tests.conftest import PASSWORD, make_app
from tests.images import jpeg
from tests.test_reports import files, report_part

BASE = "http://citygrid.test"


@pytest.fixture(scope="module")
async def own(settings: Settings, own_db: Database) -> AsyncIterator[tuple[FastAPI, Listener]]:
    app = make_app(settings, own_db)
    copies = await Copies(dsn(own_db.url)).start()
    copies.attach(app)
    yield app, copies.listener
    await copies.stop()


@pytest.fixture
async def client(own: tuple[FastAPI, Listener]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=own[0], client=("10.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


async def sql(own_db: Database, statement: str, *args: Any) -> Any:
    """Run ``statement`` on a connection of its own, as another process would."""
    conn = await asyncpg.connect(dsn(own_db.url))
    try:
        return await conn.execute(statement, *args)
    finally:
        await conn.close()


async def bearer(c: httpx.AsyncClient, username: str) -> tuple[dict[str, str], bytes]:
    r = await c.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    return {"Authorization": f"Bearer {token}"}, hashlib.sha256(token.encode()).digest()


async def test_a_token_is_looked_up_once_and_revocation_elsewhere_ends_it(
    client: httpx.AsyncClient, own: tuple[FastAPI, Listener], own_db: Database
) -> None:
    app, listener = own
    headers, key = await bearer(client, "operator07")
    assert app.state.copies.tokens.get(key) is None
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    cached = app.state.copies.tokens.get(key)
    assert isinstance(cached, Principal) and cached.username == "operator07"

    await sql(own_db, "UPDATE auth_tokens SET revoked_at = now() WHERE token_hash = $1", key)
    await listener.sync()
    assert app.state.copies.tokens.get(key) is None
    r = await client.get("/api/v1/me", headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


async def test_disabling_or_changing_a_user_elsewhere_reaches_the_copy(
    client: httpx.AsyncClient, own: tuple[FastAPI, Listener], own_db: Database
) -> None:
    app, listener = own
    headers, key = await bearer(client, "operator08")
    other_headers, other_key = await bearer(client, "operator09")
    for h in (headers, other_headers):
        assert (await client.get("/api/v1/me", headers=h)).status_code == 200

    await sql(own_db, "UPDATE users SET roles = '{planner}' WHERE username = 'operator08'")
    await listener.sync()
    assert app.state.copies.tokens.get(key) is None  # that user's entries only
    assert app.state.copies.tokens.get(other_key) is not None
    r = await client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200 and r.json()["roles"] == ["planner"]

    await sql(own_db, "UPDATE users SET disabled = true WHERE username = 'operator08'")
    await listener.sync()
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
    await sql(own_db, "UPDATE users SET disabled = false, roles = '{operator}' WHERE username = 'operator08'")


async def test_expiry_is_kept_by_the_copy(client: httpx.AsyncClient, own: tuple[FastAPI, Listener]) -> None:
    app, _ = own
    principal = Principal(1, "x", "x", frozenset({"operator"}), None)
    cache = app.state.copies.tokens
    cache.put(b"soon", principal, datetime.now(UTC) + timedelta(milliseconds=50), cache.generation)
    assert cache.get(b"soon") == principal
    await asyncio.sleep(0.1)
    assert cache.get(b"soon") is None


async def test_a_lookup_that_overlapped_an_eviction_is_not_kept(own: tuple[FastAPI, Listener]) -> None:
    cache = own[0].state.copies.tokens
    principal = Principal(2, "y", "y", frozenset({"operator"}), None)
    later = datetime.now(UTC) + timedelta(hours=1)
    generation = cache.generation  # the lookup starts …
    cache.forget(99)  # … a change to some user is announced meanwhile …
    cache.put(b"raced", principal, later, generation)  # … so its answer may be stale
    assert cache.get(b"raced") is None
    cache.put(b"raced", principal, later, cache.generation)
    assert cache.get(b"raced") == principal


async def test_matter_catalogue_follows_changes(
    client: httpx.AsyncClient, own: tuple[FastAPI, Listener], own_db: Database
) -> None:
    _, listener = own
    headers, _ = await bearer(client, "collector01")
    point = await asyncpg_point(own_db)

    async def submit() -> httpx.Response:
        part = report_part(*point)
        return await client.post("/api/v1/reports", headers=headers, files=files(part, [jpeg(*point)]))

    assert (await submit()).status_code == 201
    await sql(own_db, "UPDATE matter_classes SET active = false WHERE code = '06010'")
    await listener.sync()
    r = await submit()
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "category"
    await sql(own_db, "UPDATE matter_classes SET active = true WHERE code = '06010'")
    await listener.sync()
    assert (await submit()).status_code == 201


async def test_while_the_listener_is_down_nothing_is_trusted(
    client: httpx.AsyncClient, own: tuple[FastAPI, Listener], own_db: Database
) -> None:
    app, listener = own
    headers, key = await bearer(client, "operator10")
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    assert app.state.copies.tokens.get(key) is not None

    conn = await asyncpg.connect(dsn(own_db.url))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
    finally:
        await conn.close()
    for _ in range(100):
        if not listener.live:
            break
        await asyncio.sleep(0.02)
    assert not listener.live
    assert app.state.copies.tokens.get(key) is None
    assert app.state.copies.grid_index.current() is None  # the locator asks the database meanwhile
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["in_memory_copies"] == "down"
    # Changes made meanwhile are not missed: the database answers while the copy is off.
    await sql(own_db, "UPDATE auth_tokens SET revoked_at = now() WHERE token_hash = $1", key)
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401

    for _ in range(300):  # reconnects after retry_s
        if listener.live:
            break
        await asyncio.sleep(0.02)
    assert listener.live
    headers, key = await bearer(client, "operator10")
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
    assert app.state.copies.tokens.get(key) is not None
    for _ in range(300):  # reloaded: changes may have been missed while down
        if app.state.copies.grid_index.current() is not None:
            break
        await asyncio.sleep(0.02)
    assert app.state.copies.grid_index.current() is not None


async def asyncpg_point(own_db: Database) -> tuple[float, float]:
    """A point inside a grid of collector01's beat (WGS 84 ≈ CGCS2000 at this scale)."""
    conn = await asyncpg.connect(dsn(own_db.url))
    try:
        row = await conn.fetchrow(
            "SELECT ST_X(ST_PointOnSurface(g.geom)) AS x, ST_Y(ST_PointOnSurface(g.geom)) AS y "
            "FROM beats b JOIN users u ON u.id = b.collector_id JOIN unit_grids g ON g.code = b.grid_code "
            "WHERE u.username = 'collector01' ORDER BY g.code LIMIT 1"
        )
    finally:
        await conn.close()
    return row["x"], row["y"]
