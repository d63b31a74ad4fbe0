"""The Huaihua demo as loaded: a partition of each area into well-formed unit grids."""

from __future__ import annotations

from sqlalchemy import text

from api.db import Database
from api.seed import seed_huaihua
from grids.codes import parse_grid, validate_component
from tests.conftest import PASSWORD, CloneDb


async def _scalar(db: Database, sql: str, **params):
    async with db.sessions() as session:
        return await session.scalar(text(sql), params)


async def test_areas_and_sizes(db: Database) -> None:
    async with db.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT a.code, a.name, count(g.code) AS grids, sum(g.area_m2) / 1e6 AS km2 "
                    "FROM management_areas a JOIN unit_grids g ON g.area_code = a.code GROUP BY a.code, a.name"
                )
            )
        ).all()
    names = {r.name for r in rows}
    assert names == {"鹤城区", "经开区", "高新区", "中方县"}
    total = sum(r.km2 for r in rows)
    assert 60 <= total <= 150
    assert all(r.grids > 100 for r in rows)


async def test_centre_box_is_gridded(db: Database) -> None:
    uncovered = await _scalar(
        db,
        """
        SELECT ST_Area(ST_Transform(ST_Difference(
            ST_MakeEnvelope(109.97, 27.53, 110.03, 27.57, 4490),
            (SELECT ST_Union(geom) FROM unit_grids WHERE area_code = 'HC')), 4546))""",
    )
    assert uncovered < 1.0


async def test_no_overlaps_inside_each_area(db: Database) -> None:
    overlap = await _scalar(
        db,
        """
        SELECT coalesce(sum(ST_Area(ST_Transform(ST_Intersection(a.geom, b.geom), 4546))), 0)
        FROM unit_grids a JOIN unit_grids b
          ON a.code < b.code AND a.area_code = b.area_code AND ST_Intersects(a.geom, b.geom)""",
    )
    assert overlap < 1.0  # m², over ~9,000 grids: only floating-point slivers


async def test_no_gaps_inside_each_area(db: Database) -> None:
    async with db.sessions() as session:
        rows = (
            await session.execute(
                text("""
            SELECT a.code,
                   ST_Area(ST_Transform(ST_Difference(a.geom, u.geom), 4546)) AS gap,
                   (SELECT coalesce(sum(ST_Area(ST_Transform(ST_MakePolygon(ST_InteriorRingN(d.geom, n)), 4546))), 0)
                      FROM ST_Dump(u.geom) AS d, generate_series(1, ST_NumInteriorRings(d.geom)) AS n) AS holes
            FROM management_areas a
            CROSS JOIN LATERAL (SELECT ST_Union(geom) AS geom FROM unit_grids g WHERE g.area_code = a.code) u
        """)
            )
        ).all()
    assert len(rows) == 4
    for row in rows:
        assert row.gap < 10.0, f"{row.code}: {row.gap:.1f} m² of the area has no grid"
        assert row.holes < 10.0, f"{row.code}: holes of {row.holes:.1f} m² between grids"


async def test_every_grid_in_one_community_and_codes_well_formed(db: Database) -> None:
    async with db.sessions() as session:
        crossing = await session.scalar(
            text("""
            SELECT count(*) FROM unit_grids g JOIN regions c ON c.code = g.community_code
            WHERE ST_Area(ST_Transform(ST_Difference(g.geom, c.geom), 4546)) > 0.5""")
        )
        codes = list(await session.scalars(text("SELECT code FROM unit_grids")))
        streets_ok = await session.scalar(
            text("""
            SELECT bool_and(left(c.code, 9) = c.parent_code AND s.parent_code = left(c.code, 6))
            FROM regions c JOIN regions s ON s.code = c.parent_code WHERE c.level = 'community'""")
        )
        components = list(await session.scalars(text("SELECT code FROM components")))
        orphans = await session.scalar(text("SELECT count(*) FROM components WHERE owner_unit_id IS NULL"))
    assert crossing == 0
    assert len(codes) == len(set(codes)) > 5000
    for code in codes:
        assert parse_grid(code).code == code
    assert streets_ok
    assert 2000 <= len(components) == len(set(components))
    for code in components:
        validate_component(code)
    assert orphans == 0


async def test_beats_partition_the_grids(db: Database) -> None:
    async with db.sessions() as session:
        unassigned = await session.scalar(
            text(
                "SELECT count(*) FROM unit_grids g WHERE NOT EXISTS (SELECT 1 FROM beats b WHERE b.grid_code = g.code)"
            )
        )
        collectors = list(
            await session.scalars(
                text(
                    "SELECT DISTINCT u.username FROM beats b JOIN users u ON u.id = b.collector_id ORDER BY 1"
                )
            )
        )
        not_collectors = await session.scalar(
            text(
                "SELECT count(*) FROM beats b JOIN users u ON u.id = b.collector_id "
                "WHERE NOT 'collector' = ANY(u.roles)"
            )
        )
    assert unassigned == 0  # and the primary key on grid_code makes every grid held exactly once
    assert collectors == [f"collector{i:02d}" for i in range(1, 79)]
    assert not_collectors == 0


async def test_accounts(db: Database) -> None:
    async with db.sessions() as session:
        counts = dict(
            (await session.execute(text("SELECT r, count(*) FROM users, unnest(roles) r GROUP BY r"))).all()
        )
        hashes = list(await session.scalars(text("SELECT password_hash FROM users LIMIT 5")))
        unit_users = await session.scalar(
            text(
                "SELECT count(*) FROM units u "
                "WHERE NOT EXISTS (SELECT 1 FROM users x WHERE x.username = 'unit-' || u.code)"
            )
        )
    assert counts["collector"] == 78 and counts["operator"] == 13 and counts["supervisor"] == 3
    assert counts["planner"] == 1 and counts["admin"] == 1
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert unit_users == 0


async def test_seed_is_idempotent(clone_db: CloneDb) -> None:
    db = Database(await clone_db(), pool_size=1)
    snapshot = (
        """SELECT md5(string_agg(code || ST_AsBinary(geom)::text, ',' ORDER BY code)) FROM unit_grids"""
    )
    counts = """SELECT (SELECT count(*) FROM unit_grids), (SELECT count(*) FROM regions),
                       (SELECT count(*) FROM units), (SELECT count(*) FROM users),
                       (SELECT count(*) FROM components), (SELECT count(*) FROM beats),
                       (SELECT count(*) FROM matter_classes)"""
    try:
        async with db.sessions() as session:
            before = ((await session.execute(text(counts))).one(), await session.scalar(text(snapshot)))
            skipped = await seed_huaihua(session, PASSWORD)
            assert skipped.skipped
            forced = await seed_huaihua(session, PASSWORD, force=True)
            assert not forced.skipped and forced.new_accounts == 0
            after = ((await session.execute(text(counts))).one(), await session.scalar(text(snapshot)))
        assert before == after
    finally:
        await db.dispose()
