"""Grid files: export to GeoPackage/Shapefile/GeoJSON, and import back with dry run, checks and apply."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import pytest
import shapely
from shapely.geometry import Polygon
from sqlalchemy import text

from api.db import Database
from api.routers import planning
from api.settings import Settings
from geo.errors import InvalidInput
from grids import beats, files
from tests.conftest import PASSWORD, CloneDb, make_app


@pytest.fixture(scope="module")
async def fdb(clone_db: CloneDb) -> AsyncIterator[Database]:
    """A throwaway clone: these tests replace grids."""
    database = Database(await clone_db(), pool_size=4)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def fclient(settings: Settings, fdb: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(settings, fdb)
    if not any(getattr(r, "path", "") == "/api/v1/grids/import" for r in app.routes):  # until app.py has it
        app.include_router(planning.router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.21", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


async def _headers(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def _community(db: Database, low: int, high: int, offset: int = 0) -> str:
    """A JK community with between ``low`` and ``high`` grids."""
    async with db.sessions() as session:
        return await session.scalar(
            text(
                "SELECT community_code FROM unit_grids WHERE area_code = 'JK' GROUP BY 1 "
                "HAVING count(*) BETWEEN :lo AND :hi ORDER BY 1 OFFSET :off LIMIT 1"
            ),
            {"lo": low, "hi": high, "off": offset},
        )


async def _snapshot(db: Database) -> tuple[Any, ...]:
    """Everything an import could touch, as digests."""
    async with db.sessions() as session:
        grids = await session.scalar(
            text(
                "SELECT md5(string_agg(code || area_m2::text || ST_AsEWKT(geom) || updated_at::text, ',' "
                "ORDER BY code)) FROM unit_grids"
            )
        )
        beats = await session.scalar(
            text(
                "SELECT md5(string_agg(grid_code || collector_id::text || assigned_at::text, ',' "
                "ORDER BY grid_code)) FROM beats"
            )
        )
        revision = await session.scalar(text("SELECT n FROM geo_revision"))
    return grids, beats, revision


async def _stored(db: Database, community: str) -> dict[str, tuple[float, shapely.Geometry]]:
    async with db.sessions() as session:
        rows = await session.execute(
            text("SELECT code, area_m2, ST_AsBinary(geom) AS wkb FROM unit_grids WHERE community_code = :c"),
            {"c": community},
        )
        return {r.code.strip(): (r.area_m2, shapely.from_wkb(r.wkb)) for r in rows}


async def test_export_formats(fclient: httpx.AsyncClient, fdb: Database, tmp_path: Path) -> None:
    community = await _community(fdb, 60, 150)
    n = len(await _stored(fdb, community))
    r = await fclient.get(
        "/api/v1/grids/export", params={"community": community}, headers=await _headers(fclient, "operator01")
    )
    assert r.status_code == 403
    planner = await _headers(fclient, "planner01")
    for fmt, suffix in (("gpkg", ".gpkg"), ("shp", ".zip"), ("geojson", ".geojson")):
        r = await fclient.get(
            "/api/v1/grids/export", params={"format": fmt, "community": community}, headers=planner
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(files.FORMATS[fmt].media_type)
        assert r.headers["x-grid-count"] == str(n)
        path = tmp_path / f"export{suffix}"
        path.write_bytes(r.content)
        frame = gpd.read_file(path)
        assert len(frame) == n and set(frame.code) == set(await _stored(fdb, community))
        assert {"code", "community", "area", "area_m2", "collector"} <= set(frame.columns)
        assert (frame["community"] == community).all() and (frame["area"] == "JK").all()
        assert frame.collector.notna().all()
        assert frame.crs.to_epsg() in (4490, 4326)  # GeoJSON (RFC 7946) is WGS 84 ≈ CGCS2000
        if fmt == "shp":
            names = zipfile.ZipFile(path).namelist()
            assert {"unit_grids.shp", "unit_grids.dbf", "unit_grids.shx", "unit_grids.prj"} <= set(names)
        if fmt == "geojson":
            doc = json.loads(r.content)
            assert "crs" not in doc
            ring = doc["features"][0]["geometry"]["coordinates"][0]
            assert 109 < ring[0][0] < 111 and 27 < ring[0][1] < 28  # lon, lat
            assert shapely.Polygon(ring).exterior.is_ccw  # right-hand rule
    r = await fclient.get("/api/v1/grids/export", params={"community": "431202999999"}, headers=planner)
    assert r.status_code == 404


async def test_geopackage_round_trip(fdb: Database, tmp_path: Path) -> None:
    """Dry run of an unchanged export: clean report, nothing changed; then damage, apply, reproduced."""
    community = await _community(fdb, 60, 150, offset=1)
    original = await _stored(fdb, community)
    async with fdb.sessions() as session:
        path, n = await files.export_grids(session, tmp_path / "c.gpkg", community=community)
    assert n == len(original)

    before = await _snapshot(fdb)
    async with fdb.sessions() as session:
        outcome = await files.import_grids(session, path)  # dry run
    assert outcome.plan.valid and not outcome.applied
    assert outcome.plan.communities == [community] and len(outcome.plan.unchanged) == n
    assert not (outcome.plan.added or outcome.plan.removed or outcome.plan.changed)
    assert outcome.report["valid"], outcome.report["problems"][:3]
    assert outcome.report["areas"] == ["JK"] and outcome.report["grids"] > 2000
    assert await _snapshot(fdb) == before

    # Damage the stored community: one grid deleted, one shrunk, one renumbered (with a report on it).
    codes = sorted(original)
    deleted, shrunk, renumbered = codes[3], codes[10], codes[20]
    bogus = community + "999"
    async with fdb.sessions() as session:
        await session.execute(text("DELETE FROM unit_grids WHERE code = :c"), {"c": deleted})
        await session.execute(
            text("UPDATE unit_grids SET geom = ST_Buffer(geom, -0.00005) WHERE code = :c"), {"c": shrunk}
        )
        await session.execute(
            text("UPDATE unit_grids SET code = :b WHERE code = :c"), {"b": bogus, "c": renumbered}
        )
        await session.execute(
            text(
                "INSERT INTO reports (source, kind, category, grid_code, area_code, geom) "
                "SELECT 'hotline', 'event', '06010', code, area_code, ST_PointOnSurface(geom) "
                "FROM unit_grids WHERE code = :b"
            ),
            {"b": bogus},
        )
        kept_beats = await session.scalar(
            text("SELECT count(*) FROM beats WHERE left(grid_code, 12) = :c"), {"c": community}
        )
        await session.commit()

    async with fdb.sessions() as session:
        plan = await files.plan_import(session, files.read_grids(path))
        assert plan.valid, plan.problems
        assert sorted(plan.added) == sorted([deleted, renumbered])
        assert plan.removed == [bogus] and plan.changed == [shrunk]
        assert plan.history["reports"] == 1 and any("history" in note for note in plan.notes)
        await files.apply(session, plan)
        await session.commit()

    stored = await _stored(fdb, community)
    assert set(stored) == set(original)
    for code, (m2, geom) in original.items():
        assert abs(stored[code][0] - m2) < 0.5
        assert shapely.hausdorff_distance(stored[code][1], geom) < 1e-8  # degrees: ~1 mm
    async with fdb.sessions() as session:
        # Kept codes kept their collector; the re-added ones have none yet; the report keeps its code.
        beats_now = await session.scalar(
            text("SELECT count(*) FROM beats WHERE left(grid_code, 12) = :c"), {"c": community}
        )
        history = await session.scalar(
            text("SELECT count(*) FROM reports WHERE grid_code = :b"), {"b": bogus}
        )
        assert beats_now == kept_beats - 1 and history == 1
        generated = await session.scalar(
            text("SELECT bool_and(generated) FROM unit_grids WHERE code = ANY(:c)"), {"c": [shrunk, deleted]}
        )
        assert generated is False
        # Give the re-added grids a collector again, so the next tests start from a clean report.
        holder = await session.scalar(
            text(
                "SELECT u.username FROM beats b JOIN users u ON u.id = b.collector_id WHERE b.grid_code = :c"
            ),
            {"c": shrunk},
        )
        await beats.assign(session, [deleted, renumbered], holder)
        await session.commit()


async def test_shapefile_in_gauss_kruger_through_the_api(
    fclient: httpx.AsyncClient, fdb: Database, tmp_path: Path
) -> None:
    """A Shapefile in EPSG:4546 (with .prj), uploaded as its parts: reprojected, and reproduces the grids."""
    community = await _community(fdb, 60, 150, offset=2)
    original = await _stored(fdb, community)
    async with fdb.sessions() as session:
        frame = await files.grids_frame(session, community)
    folder = tmp_path / "shp"
    folder.mkdir()
    frame.to_crs(4546).to_file(folder / "grids4546.shp", encoding="UTF-8")
    parts = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in sorted(folder.iterdir())]
    planner = await _headers(fclient, "planner01")

    r = await fclient.post("/api/v1/grids/import", files=parts, headers=await _headers(fclient, "operator01"))
    assert r.status_code == 403

    before = await _snapshot(fdb)
    r = await fclient.post("/api/v1/grids/import", params={"dry_run": "true"}, files=parts, headers=planner)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["applied"] is False and body["plan"]["valid"] and body["report"]["valid"]
    assert body["plan"]["unchanged"] == len(original)
    assert any("EPSG:4546" in note for note in body["plan"]["notes"])
    assert await _snapshot(fdb) == before

    # Remove two grids, then apply the file: they come back, the others are kept as stored.
    gone = sorted(original)[5:7]
    async with fdb.sessions() as session:
        await session.execute(text("DELETE FROM unit_grids WHERE code = ANY(:c)"), {"c": gone})
        await session.commit()
    r = await fclient.post("/api/v1/grids/import", params={"dry_run": "false"}, files=parts, headers=planner)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["applied"] is True and body["plan"]["added"] == 2
    assert body["report"]["summary"]["no_collector"] == 2  # the report of the result said so beforehand
    stored = await _stored(fdb, community)
    assert set(stored) == set(original)
    for code, (m2, geom) in original.items():
        assert abs(stored[code][0] - m2) < 0.5
        assert shapely.hausdorff_distance(stored[code][1], geom) < 1e-8
    async with fdb.sessions() as session:
        ok = await session.scalar(
            text(
                "SELECT bool_and(ST_Area(ST_Transform("
                "    ST_SymDifference(g.geom, ST_GeomFromWKB(o.wkb, 4490)), 4546)) < 0.01) "
                "FROM unit_grids g JOIN unnest(CAST(:codes AS text[]), CAST(:wkbs AS bytea[])) AS o(code, wkb) "
                "ON o.code = g.code"
            ),
            {"codes": list(original), "wkbs": [shapely.to_wkb(g) for _, g in original.values()]},
        )
    assert ok
    async with fdb.sessions() as session:
        holder = await session.scalar(
            text(
                "SELECT u.username FROM beats b JOIN users u ON u.id = b.collector_id WHERE b.grid_code = :c"
            ),
            {"c": sorted(original)[4]},
        )
        await beats.assign(session, gone, holder)
        await session.commit()


async def test_invalid_file_is_refused_with_every_reason(
    fclient: httpx.AsyncClient, fdb: Database, tmp_path: Path
) -> None:
    community = await _community(fdb, 60, 150, offset=3)
    other = await _community(fdb, 60, 150, offset=4)
    async with fdb.sessions() as session:
        frame = await files.grids_frame(session, community)
        foreign = await files.grids_frame(session, other)
    frame = frame.reset_index(drop=True)
    # An overlap: grid 2 swallows its neighbour grid 3 (both stay in the file).
    frame.loc[2, "geometry"] = frame.geometry[2].union(frame.geometry[3])
    # A broken geometry: a bow tie.
    x0, y0, x1, y1 = frame.geometry[9].bounds
    frame.loc[9, "geometry"] = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
    # A code (and grid) of another community.
    frame = gpd.GeoDataFrame(
        [*frame.to_dict("records"), foreign.iloc[0].to_dict()], geometry="geometry", crs="EPSG:4490"
    )
    path = tmp_path / "broken.gpkg"
    frame.to_file(path, layer="unit_grids")

    before = await _snapshot(fdb)
    planner = await _headers(fclient, "planner01")
    for dry in ("true", "false"):
        r = await fclient.post(
            "/api/v1/grids/import",
            params={"dry_run": dry, "community": community},
            files=[("file", ("broken.gpkg", path.read_bytes(), "application/geopackage+sqlite3"))],
            headers=planner,
        )
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == "grid_import_refused"
        messages = " | ".join(e["message"] for e in body["errors"])
        assert "overlap:" in messages and frame.code[3] in messages
        assert "invalid_geometry:" in messages and "Self-intersection" in messages
        assert "other_community:" in messages and foreign.code[0] in messages
        assert "gap:" in messages  # the bow tie is left out, so its ground is not covered
        assert body["plan"]["summary"]["overlap"] == 1 and body["plan"]["summary"]["invalid_geometry"] == 1
        assert body["report"]["summary"]["overlap"] == 1  # the validation report of the result agrees
    assert await _snapshot(fdb) == before

    async with fdb.sessions() as session:
        plan = await files.plan_import(session, files.read_grids(path), community)
        with pytest.raises(files.ImportRefused) as refused:
            await files.apply(session, plan)
    assert len(refused.value.errors) == len(plan.problems) >= 4
    assert await _snapshot(fdb) == before


async def test_legacy_codes_and_a_file_without_crs(fdb: Database, tmp_path: Path) -> None:
    """14-digit CJ/T 213-2005 codes are widened (each one said); no .prj: lon/lat assumed, or refused."""
    community = await _community(fdb, 20, 99)
    async with fdb.sessions() as session:
        frame = await files.grids_frame(session, community)
    legacy = frame[["code", "geometry"]].copy()
    legacy["code"] = [c[:12] + c[13:] for c in legacy.code]  # 3-digit sequence → 2 digits
    legacy = legacy.set_crs(None, allow_override=True)
    with pytest.warns(UserWarning, match="crs"):
        legacy.to_file(tmp_path / "legacy.shp")
    assert not (tmp_path / "legacy.prj").exists()

    before = await _snapshot(fdb)
    async with fdb.sessions() as session:
        read = files.read_grids(tmp_path / "legacy.shp")
        plan = await files.plan_import(session, read)
        report = await files.dry_run(session, plan)
    assert plan.valid and len(plan.unchanged) == len(frame)
    widened = [n for n in plan.notes if "legacy 14-digit code" in n]
    assert len(widened) == len(frame)
    assert f"{legacy.code[0]} widened to {frame.code[0]}" in widened[0]
    assert any("declares no CRS" in n for n in plan.notes)
    assert report["valid"]
    assert await _snapshot(fdb) == before

    projected = frame.to_crs(4546).set_crs(None, allow_override=True)
    with pytest.warns(UserWarning, match="crs"):
        projected.to_file(tmp_path / "noprj.shp")
    with pytest.raises(InvalidInput, match="no coordinate system"):
        files.read_grids(tmp_path / "noprj.shp")
