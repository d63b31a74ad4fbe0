"""The point locator on the demo geometries: inside, shared edges, just outside, far outside."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from api.db import Database
from geo import crs
from geo.errors import OutsideJurisdiction
from geo.locator import SNAP_M, locate, locate_many
from tests.conftest import Login

M_PER_DEG_LAT = 110_900.0


@pytest.fixture(scope="module")
async def interior(db: Database) -> tuple[float, float, str]:
    async with db.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT code, ST_X(p) AS x, ST_Y(p) AS y FROM (SELECT code, ST_PointOnSurface(geom) AS p "
                    "FROM unit_grids WHERE area_code = 'HC' ORDER BY code LIMIT 1 OFFSET 500) g"
                )
            )
        ).one()
    return row.x, row.y, row.code


@pytest.fixture(scope="module")
async def shared_vertex(db: Database) -> tuple[float, float, list[str]]:
    """A vertex shared by exactly two grids (exact coordinates, on both edges)."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                text("""
            WITH a AS (SELECT geom FROM unit_grids WHERE area_code = 'HC' ORDER BY code LIMIT 1 OFFSET 700),
                 pts AS (SELECT DISTINCT (ST_DumpPoints(a.geom)).geom AS p FROM a)
            SELECT ST_X(p) AS x, ST_Y(p) AS y, array_agg(g.code ORDER BY g.code) AS codes
            FROM pts JOIN unit_grids g ON ST_Intersects(g.geom, pts.p)
            GROUP BY p HAVING count(*) = 2 LIMIT 1""")
            )
        ).one()
    return row.x, row.y, [c.strip() for c in row.codes]


@pytest.fixture(scope="module")
async def north_edge(db: Database) -> tuple[float, float]:
    """The northern edge of the jurisdiction at lon 110.0 (nothing is gridded north of it)."""
    async with db.sessions() as session:
        y = await session.scalar(
            text(
                "SELECT ST_YMax(ST_Intersection(geom, ST_SetSRID(ST_MakeLine(ST_MakePoint(110.0, 27.4), "
                "ST_MakePoint(110.0, 27.8)), 4490))) FROM management_areas WHERE code = 'HC'"
            )
        )
    return 110.0, y


async def test_inside_a_grid(db: Database, interior: tuple[float, float, str]) -> None:
    x, y, code = interior
    async with db.sessions() as session:
        where = await locate(session, x, y, "cgcs2000")
    assert where.grid == code.strip()
    assert where.snapped_m is None
    assert where.community[0] == code[:12] and where.street[0] == code[:9] and where.county[0] == "431202"
    assert where.area == ("HC", "鹤城区") and where.county[1] == "鹤城区"
    assert where.community[1].endswith(("社区", "村"))


async def test_shared_vertex_is_deterministic(
    db: Database, shared_vertex: tuple[float, float, list[str]]
) -> None:
    x, y, codes = shared_vertex
    async with db.sessions() as session:
        answers = {(await locate(session, x, y, "cgcs2000")).grid for _ in range(5)}
    assert answers == {codes[0]}  # the smaller code of the two grids


async def test_just_outside_snaps_to_nearest(db: Database, north_edge: tuple[float, float]) -> None:
    x, y = north_edge
    async with db.sessions() as session:
        where = await locate(session, x, y + 20 / M_PER_DEG_LAT, "cgcs2000")
        inside = await locate(session, x, y - 5 / M_PER_DEG_LAT, "cgcs2000")
    assert where.snapped_m is not None and 18 < where.snapped_m < 22
    assert where.grid == inside.grid


async def test_far_outside_is_refused(db: Database, north_edge: tuple[float, float]) -> None:
    x, y = north_edge
    async with db.sessions() as session:
        with pytest.raises(OutsideJurisdiction) as refused:
            await locate(session, x, y + (SNAP_M + 30) / M_PER_DEG_LAT, "cgcs2000")
        with pytest.raises(OutsideJurisdiction):
            await locate(session, 116.39, 39.91, "wgs84")  # Beijing
    assert "outside the jurisdiction" in refused.value.detail


@pytest.mark.parametrize("system", ["wgs84", "cgcs2000", "gcj02", "bd09"])
async def test_every_coordinate_system(db: Database, interior: tuple[float, float, str], system: str) -> None:
    x, y, code = interior
    lon, lat = crs.from_cgcs2000(x, y, system)
    if system in ("gcj02", "bd09"):
        assert crs.distance_m(lon, lat, x, y) > 300  # the obfuscation really moved the point
    async with db.sessions() as session:
        where = await locate(session, lon, lat, system)
    assert where.grid == code.strip()
    assert crs.distance_m(where.lon, where.lat, x, y) < 0.01


async def test_bulk_agrees_with_single(
    db: Database, shared_vertex: tuple[float, float, list[str]], north_edge: tuple[float, float]
) -> None:
    rng = np.random.default_rng(3)
    xs = list(rng.uniform(109.975, 110.025, 300)) + [shared_vertex[0], north_edge[0], north_edge[0]]
    ys = list(rng.uniform(27.515, 27.565, 300)) + [
        shared_vertex[1],
        north_edge[1] + 20 / M_PER_DEG_LAT,
        north_edge[1] + 500 / M_PER_DEG_LAT,
    ]
    async with db.sessions() as session:
        bulk = await locate_many(session, xs, ys, "cgcs2000")
        singles = []
        for x, y in zip(xs[:-1], ys[:-1], strict=True):
            singles.append(await locate(session, x, y, "cgcs2000"))
    assert bulk[-1] is None  # 500 m out
    assert [b.grid for b in bulk[:-1]] == [s.grid for s in singles]
    assert bulk[-3].grid == shared_vertex[2][0]
    assert bulk[-2].snapped_m == singles[-1].snapped_m


async def test_bulk_of_many_points_uses_the_indexed_path(db: Database) -> None:
    rng = np.random.default_rng(5)
    xs, ys = rng.uniform(109.975, 110.025, 3000), rng.uniform(27.515, 27.565, 3000)
    async with db.sessions() as session:
        bulk = await locate_many(session, xs, ys, "wgs84")
        probe = await locate(session, float(xs[1234]), float(ys[1234]), "wgs84")
    assert all(b is not None for b in bulk)
    assert bulk[1234].grid == probe.grid


async def test_locate_endpoint(
    client: httpx.AsyncClient, login: Login, interior: tuple[float, float, str]
) -> None:
    x, y, code = interior
    lon, lat = crs.from_cgcs2000(x, y, "gcj02")
    r = await client.get(
        "/api/v1/locate", params={"lon": lon, "lat": lat, "crs": "gcj02"}, headers=await login("collector01")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grid"] == code.strip()
    assert body["district"] == "鹤城区" and body["county"] == {"code": "431202", "name": "鹤城区"}
    assert body["community"]["code"] == code[:12] and body["street"]["code"] == code[:9]
    assert body["snapped_m"] is None
    assert abs(body["location"]["lon"] - x) < 1e-7 and abs(body["location"]["lat"] - y) < 1e-7


async def test_locate_endpoint_errors(client: httpx.AsyncClient, login: Login) -> None:
    headers = await login("planner01")
    r = await client.get("/api/v1/locate", params={"lon": 116.39, "lat": 39.91}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "outside_jurisdiction"
    assert r.json()["errors"][0]["field"] == "location"
    r = await client.get("/api/v1/locate", params={"lon": 110.0, "lat": 95}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    assert r.json()["errors"][0]["field"] == "lat"
    r = await client.get("/api/v1/locate", params={"lon": 110.0, "lat": 27.55, "crs": "utm"}, headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "crs"
    r = await client.get("/api/v1/locate", params={"lon": 110.0, "lat": 27.55})
    assert r.status_code == 401


async def test_index_agrees_with_the_database(
    db: Database,
    grid_index,
    shared_vertex: tuple[float, float, list[str]],
) -> None:
    index = grid_index.current()
    assert index is not None and len(index) > 10_000
    rng = np.random.default_rng(9)
    xs, ys = rng.uniform(109.975, 110.025, 500), rng.uniform(27.515, 27.565, 500)
    async with db.sessions() as session:
        for x, y in zip(xs, ys, strict=True):
            from_db = await locate(session, float(x), float(y), "cgcs2000")
            from_index = await locate(session, float(x), float(y), "cgcs2000", index)
            assert from_index == from_db
    assert index.lookup(shared_vertex[0], shared_vertex[1]) is None  # edges: the database decides


async def test_index_follows_changes_to_the_grids(clone_db) -> None:
    import asyncio

    from api.admin_db import dsn
    from api.copies import Copies

    url = await clone_db()
    copies = await Copies(dsn(url)).start()
    keeper = copies.grid_index
    db = Database(url, pool_size=1)
    try:
        async with db.sessions() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT code, ST_X(ST_PointOnSurface(geom)) AS x, ST_Y(ST_PointOnSurface(geom)) AS y "
                        "FROM unit_grids ORDER BY code LIMIT 1 OFFSET 42"
                    )
                )
            ).one()
            before = keeper.current()
            assert before is not None and before.lookup(row.x, row.y).code == row.code.strip()
            await session.execute(text("DELETE FROM beats WHERE grid_code = :c"), {"c": row.code})
            await session.execute(text("DELETE FROM unit_grids WHERE code = :c"), {"c": row.code})
            await session.commit()
        for _ in range(100):  # the NOTIFY arrives, the keeper reloads
            await asyncio.sleep(0.05)
            current = keeper.current()
            if current is not None and current is not before:
                break
        assert current is not None and current.revision > before.revision
        assert current.lookup(row.x, row.y) is None or current.lookup(row.x, row.y).code != row.code.strip()
    finally:
        await db.dispose()
        await copies.stop()


def test_index_handles_holes_multipolygons_and_edges() -> None:
    """Imported grids are not all rectangles: the plain-Python lookup must agree with GEOS."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    from geo.grid_index import GridIndex

    ring = Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (3, 1), (3, 3), (1, 3)]])  # a hole
    hole = Polygon([(1, 1), (3, 1), (3, 3), (1, 3)])  # another grid fills it
    islands = MultiPolygon([Polygon([(5, 0), (6, 0), (6, 1), (5, 1)]), Polygon([(5, 3), (7, 3), (6, 4)])])
    geoms = np.array([ring, hole, islands], dtype=object)
    rows = [{"code": c} for c in ("ring", "hole", "islands")]
    index = GridIndex(1, ["ring", "hole", "islands"], geoms, rows)
    rng = np.random.default_rng(5)
    points = rng.uniform(-0.5, 7.5, (4000, 2))
    for x, y in points:
        hit = index.lookup(float(x), float(y))
        inside = [
            c
            for c, g in zip(("ring", "hole", "islands"), geoms, strict=True)
            if g.contains(shapely.Point(x, y))
        ]
        assert (hit.code if hit else None) == (inside[0] if inside else None)
    assert index.lookup(0.5, 0.5).code == "ring" and index.lookup(2.0, 2.0).code == "hole"
    assert index.lookup(6.0, 3.5).code == "islands" and index.lookup(5.5, 2.0) is None
    # On a shared edge, a vertex, or a hair away from an edge: not decided in memory.
    for x, y in [(1.0, 2.0), (3.0, 3.0), (2.0, 1.0 + 5e-8), (4.0, 2.0), (5.0, 0.5)]:
        assert index.lookup(x, y) is None
