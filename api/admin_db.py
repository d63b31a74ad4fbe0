"""Database administration: create databases, migrate with Alembic, clone templates."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from api.settings import PROJECT_ROOT, Settings


def dsn(sqlalchemy_url: str) -> str:
    """A libpq/asyncpg DSN for a SQLAlchemy URL."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin_connection(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(dsn(settings.url_for("postgres")))


async def database_exists(settings: Settings, name: str) -> bool:
    conn = await _admin_connection(settings)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def create_database(settings: Settings, name: str, template: str | None = None) -> bool:
    """Create ``name`` (from ``template`` if given) unless it exists; True when created."""
    conn = await _admin_connection(settings)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        return True
    finally:
        await conn.close()


async def drop_database(settings: Settings, name: str) -> None:
    conn = await _admin_connection(settings)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(Path(PROJECT_ROOT) / "migrations"))
    config.attributes["url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade to ``revision`` (synchronous: Alembic's env runs its own event loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head() or ""


async def database_comment(settings: Settings, name: str) -> str | None:
    conn = await _admin_connection(settings)
    try:
        return await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name
        )
    finally:
        await conn.close()


def seeded_fingerprint() -> str:
    """Changes whenever the migrations or anything the demo seed is made from changes."""
    import hashlib

    from api.seed import fingerprint

    digest = hashlib.sha256(fingerprint().encode())
    for path in sorted((PROJECT_ROOT / "migrations").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


async def ensure_seeded(settings: Settings, name: str, password: str | None) -> bool:
    """A database migrated and loaded with the Huaihua demo, rebuilt when out of date.

    Used as the test suite's template and by the benchmarks; True when (re)built.
    """
    fp = seeded_fingerprint()
    if await database_comment(settings, name) == fp:
        return False
    # Several test runs may start at once: one builds, the others wait and then find it built.
    lock = await _admin_connection(settings)
    try:
        await lock.execute("SELECT pg_advisory_lock(hashtext($1))", f"seeded:{name}")
        if await database_comment(settings, name) == fp:
            return False
        await _build(settings, name, password, fp)
    finally:
        await lock.close()  # releases the lock
    return True


async def _build(settings: Settings, name: str, password: str | None, fp: str) -> None:
    import asyncio

    from api.db import Database
    from api.seed import seed_huaihua

    await drop_database(settings, name)
    await create_database(settings, name)
    url = settings.url_for(name)
    await asyncio.to_thread(migrate, url)
    db = Database(url, pool_size=1)
    try:
        async with db.sessions() as session:
            await seed_huaihua(session, password)
    finally:
        await db.dispose()
    conn = await _admin_connection(settings)
    try:
        await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{fp}'")
    finally:
        await conn.close()
