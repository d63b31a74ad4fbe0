"""Test fixtures: a real PostGIS (the embedded cluster or DATABASE_URL), seeded once.

The Huaihua demo is migrated and seeded into a template database, rebuilt only when the
migrations or the seed change; every test session works on a clone of it, and tests that
need a pristine database clone their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api import admin_db, cluster
from api.app import create_app
from api.copies import Copies
from api.db import Database
from api.settings import PROJECT_ROOT, Settings, get_settings
from geo.grid_index import GridIndexKeeper

TEMPLATE = "citygrid_template"
PASSWORD = "citygrid-demo"


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    os.environ.setdefault("CITYGRID_PHOTO_DIR", str(tmp_path_factory.mktemp("photos")))
    get_settings.cache_clear()
    current = get_settings()
    if current.embedded:
        cluster.up(current)
    return current


@pytest.fixture(scope="session")
async def template(settings: Settings) -> str:
    await admin_db.ensure_seeded(settings, TEMPLATE, PASSWORD)
    return TEMPLATE


CloneDb = Callable[[], Awaitable[str]]


@pytest.fixture(scope="session")
async def clone_db(settings: Settings, template: str) -> AsyncIterator[CloneDb]:
    """A factory of throwaway databases cloned from the seeded template; dropped at the end."""
    created: list[str] = []

    async def make() -> str:
        name = f"citygrid_test_{uuid.uuid4().hex[:10]}"
        await admin_db.create_database(settings, name, template=template)
        created.append(name)
        return settings.url_for(name)

    yield make
    for name in created:
        await admin_db.drop_database(settings, name)


@pytest.fixture(scope="session")
async def db_url(clone_db: CloneDb) -> str:
    """The session's database (a clone of the seeded template)."""
    return await clone_db()


@pytest.fixture(scope="session")
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def own_db(clone_db: CloneDb) -> AsyncIterator[Database]:
    """A database of the test module's own, for tests that change rows others rely on."""
    database = Database(await clone_db())
    yield database
    await database.dispose()


def make_app(settings: Settings, database: Database) -> FastAPI:
    app = create_app(settings)
    app.state.db = database  # the ASGI transport runs no lifespan
    return app


@pytest.fixture(scope="session")
async def copies(db_url: str) -> AsyncIterator[Copies]:
    """The in-memory copies of the session's database, as the lifespan starts them."""
    copies = await Copies(admin_db.dsn(db_url)).start()
    yield copies
    await copies.stop()


@pytest.fixture(scope="session")
def grid_index(copies: Copies) -> GridIndexKeeper:
    return copies.grid_index


@pytest.fixture(scope="session")
async def app(settings: Settings, db: Database, copies: Copies) -> FastAPI:
    app = make_app(settings, db)
    copies.attach(app)
    return app


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


Login = Callable[[str], Awaitable[dict[str, str]]]


@pytest.fixture(scope="session")
async def login(client: httpx.AsyncClient) -> Login:
    """``await login("operator01")`` → the Authorization header of that demo account."""
    tokens: dict[str, str] = {}

    async def headers(username: str) -> dict[str, str]:
        if username not in tokens:
            r = await client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[username] = r.json()["access_token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    return headers


@pytest.fixture
def data_dir() -> Path:
    return PROJECT_ROOT / "tests" / "data"
