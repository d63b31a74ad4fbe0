"""The grid validation report: the demo is clean, and each kind of damage is found."""

from __future__ import annotations

import time

import httpx
from sqlalchemy import text

from api.db import Database
from grids.validation import KINDS, validate
from tests.conftest import CloneDb, Login


async def test_demo_validates_clean(db: Database) -> None:
    started = time.perf_counter()
    async with db.sessions() as session:
        report = await validate(session)
    assert report["problems"] == [], report["problems"][:3]
    assert report["valid"] and report["grids"] > 10_000
    assert set(report["summary"]) == set(KINDS) and not any(report["summary"].values())
    print(f"validation of {report['grids']} grids: {time.perf_counter() - started:.1f} s")


async def test_each_kind_of_damage_is_found(clone_db: CloneDb) -> None:
    db = Database(await clone_db(), pool_size=1)
    try:
        async with db.sessions() as session:
            codes = list(
                await session.scalars(
                    text("SELECT code FROM unit_grids WHERE area_code = 'JK' ORDER BY code OFFSET 100")
                )
            )
            # Far apart, so that one damage does not hide another.
            moved, deleted, renumbered, unpatrolled = (codes[i].strip() for i in (0, 300, 600, 900))
            # Laid over a grid of another community: an overlap, a crossing and a gap at once.
            other = (
                await session.scalar(
                    text(
                        "UPDATE unit_grids m SET geom = o.geom FROM unit_grids o "
                        "WHERE m.code = :c AND o.code = (SELECT min(code) FROM unit_grids "
                        "  WHERE area_code = 'JK' AND community_code <> left(:c, 12)) RETURNING o.code"
                    ),
                    {"c": moved},
                )
            ).strip()
            await session.execute(text("DELETE FROM unit_grids WHERE code = :c"), {"c": deleted})
            await session.execute(
                text("UPDATE unit_grids SET code = left(code, 12) || '000' WHERE code = :c"),
                {"c": renumbered},
            )
            await session.execute(text("DELETE FROM beats WHERE grid_code = :c"), {"c": unpatrolled})
            tiny = await session.scalar(
                text(
                    "UPDATE unit_grids SET geom = ST_Buffer(ST_PointOnSurface(geom), 0.0001, 2) "
                    "WHERE code = (SELECT code FROM unit_grids WHERE area_code = 'GX' ORDER BY code LIMIT 1) "
                    "RETURNING code"
                )
            )
            report = await validate(session)
        kinds = {p["kind"]: p for p in report["problems"]}
        assert not report["valid"]
        assert sorted([moved, other]) == kinds["overlap"]["grids"] and kinds["overlap"]["area_m2"] > 3000
        gaps = [p for p in report["problems"] if p["kind"] == "gap" and p["area"] == "JK"]
        assert sum(p["area_m2"] for p in gaps) > 5000  # the deleted grid, at least
        assert kinds["crosses_community"]["grids"] == [moved] and kinds["crosses_community"]["area_m2"] > 3000
        assert kinds["malformed_code"]["grids"] == [renumbered[:12] + "000"]
        assert unpatrolled in {
            g for p in report["problems"] if p["kind"] == "no_collector" for g in p["grids"]
        }
        assert any(p["kind"] == "area_outlier" and p["grids"] == [tiny.strip()] for p in report["problems"])
        for p in report["problems"]:
            if p["kind"] != "duplicate_code":
                assert p["geometry"]["type"] in (
                    "Polygon",
                    "MultiPolygon",
                    "GeometryCollection",
                    "LineString",
                )
    finally:
        await db.dispose()


async def test_validation_endpoint(client: httpx.AsyncClient, login: Login) -> None:
    r = await client.get("/api/v1/grids/validation", headers=await login("operator01"))
    assert r.status_code == 403
    r = await client.get(
        "/api/v1/grids/validation", params={"format": "geojson"}, headers=await login("planner01")
    )
    assert r.status_code == 200
    body = r.json()
    assert body == {"type": "FeatureCollection", "features": []}
    r = await client.get(
        "/api/v1/grids/validation", params={"min_area_m2": 9000}, headers=await login("admin")
    )
    report = r.json()
    assert report["summary"]["area_outlier"] > 100  # a stricter norm finds the smaller grids
    outlier = next(p for p in report["problems"] if p["kind"] == "area_outlier")
    assert outlier["area_m2"] < 9000 and outlier["geometry"]["type"] == "Polygon"
