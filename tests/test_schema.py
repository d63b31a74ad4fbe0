"""The Alembic chain: one linear history, up and down, and the mappings agree with it."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import cases.models  # noqa: F401  (registers the tables on Base.metadata)
import grids.models  # noqa: F401
from api import admin_db
from api.settings import Settings
from geo.models import Base


def test_one_linear_chain() -> None:
    scripts = ScriptDirectory.from_config(admin_db.alembic_config(""))
    assert len(scripts.get_heads()) == 1
    assert len(scripts.get_bases()) == 1


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(admin_db.dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN "
            "('spatial_ref_sys', 'alembic_version')"
        )
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_migrations_up_down_up(settings: Settings) -> None:
    name = "citygrid_test_migrations"
    await admin_db.drop_database(settings, name)
    await admin_db.create_database(settings, name)
    url = settings.url_for(name)
    try:
        await asyncio.to_thread(admin_db.migrate, url)
        tables = await _tables(url)
        assert {"unit_grids", "cases", "case_events", "reports", "beats", "dispatch_rules"} <= tables
        assert tables == set(Base.metadata.tables), "ORM mappings and migrations disagree on tables"
        await asyncio.to_thread(admin_db.downgrade, url, "base")
        assert await _tables(url) == set()
        await asyncio.to_thread(admin_db.migrate, url)
        assert await _tables(url) == tables
    finally:
        await admin_db.drop_database(settings, name)


async def test_mapped_columns_exist(db) -> None:
    async with db.engine.connect() as conn:

        def check(sync_conn) -> list[str]:
            inspector = inspect(sync_conn)
            missing = []
            for table in Base.metadata.tables.values():
                actual = {c["name"] for c in inspector.get_columns(table.name)}
                mapped = {c.name for c in table.columns}
                missing += [f"{table.name}.{c}" for c in mapped ^ actual]
            return missing

        assert await conn.run_sync(check) == []


async def test_case_events_are_append_only(db) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    async with db.sessions() as session:
        report = await session.scalar(
            text(
                "INSERT INTO reports (source, kind, category, geom) "
                "VALUES ('hotline', 'event', '06010', ST_SetSRID(ST_MakePoint(110.0, 27.55), 4490)) RETURNING id"
            )
        )
        event = await session.scalar(
            text("INSERT INTO case_events (report_id, action) VALUES (:r, 'received') RETURNING id"),
            {"r": report},
        )
        await session.commit()
        for statement in (
            "UPDATE case_events SET action = 'x' WHERE id = :e",
            "DELETE FROM case_events WHERE id = :e",
        ):
            try:
                await session.execute(text(statement), {"e": event})
                raise AssertionError(f"{statement} was allowed")
            except DBAPIError as exc:
                assert "append-only" in str(exc)
            await session.rollback()
