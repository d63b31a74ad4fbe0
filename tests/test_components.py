"""Components (部件): query, snap, check, register and import (GeoJSON, GeoPackage, CSV)."""

from __future__ import annotations

import json

import geopandas as gpd
import httpx
import pytest
from shapely.geometry import Point
from sqlalchemy import text

from api.db import Database
from geo import components, crs
from tests.conftest import Login

M_PER_DEG_LON = 98_800.0  # at 27.5°N


@pytest.fixture(scope="module")
async def cover(db: Database) -> dict:
    """A water-supply cover (01001) with no other 01001 within 40 m."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                text("""
            SELECT c.code, ST_X(c.geom) AS x, ST_Y(c.geom) AS y FROM components c
            WHERE c.class_code = '01001' AND NOT EXISTS (
                SELECT 1 FROM components o WHERE o.class_code = '01001' AND o.code <> c.code
                  AND ST_DWithin(o.geom::geography, c.geom::geography, 40))
            ORDER BY c.code LIMIT 1""")
            )
        ).one()
    return {"code": row.code, "x": row.x, "y": row.y}


async def test_search_by_class_owner_bbox_and_code(
    client: httpx.AsyncClient, login: Login, cover: dict
) -> None:
    headers = await login("operator01")
    r = await client.get("/api/v1/components", params={"class": "01001", "limit": 1000}, headers=headers)
    assert r.status_code == 200
    found = r.json()
    assert found and all(c["class"] == "01001" and c["owner"]["code"] == "water" for c in found)
    r = await client.get("/api/v1/components", params={"owner": "power", "limit": 1000}, headers=headers)
    assert {c["class"] for c in r.json()} <= {"01005", "01030", "01048"}
    box = (cover["x"] - 0.001, cover["y"] - 0.001, cover["x"] + 0.001, cover["y"] + 0.001)
    r = await client.get("/api/v1/components", params={"bbox": ",".join(map(str, box))}, headers=headers)
    inside = r.json()
    assert cover["code"] in {c["code"] for c in inside}
    assert all(
        box[0] <= c["location"]["lon"] <= box[2] and box[1] <= c["location"]["lat"] <= box[3] for c in inside
    )
    r = await client.get("/api/v1/components", params={"code": cover["code"][:11]}, headers=headers)
    assert all(c["code"].startswith(cover["code"][:11]) for c in r.json())
    r = await client.get(f"/api/v1/components/{cover['code']}", headers=headers)
    assert r.json()["class_name"] == "供水井盖"
    assert (await client.get("/api/v1/components/43120201001999999", headers=headers)).status_code == 404
    r = await client.get("/api/v1/components", params={"bbox": "110,27,109,28"}, headers=headers)
    assert r.status_code == 422


async def test_snap_within_tolerance(db: Database, cover: dict) -> None:
    async with db.sessions() as session:
        near = await components.snap(session, cover["x"] + 5 / M_PER_DEG_LON, cover["y"], "01001")
        far = await components.snap(session, cover["x"] + 30 / M_PER_DEG_LON, cover["y"], "01001")
        other_class = await components.snap(session, cover["x"], cover["y"], "01011", tolerance_m=0.5)
    assert near is not None and near["code"] == cover["code"]
    assert 4.5 < near["distance_m"] < 5.5
    assert far is None
    assert other_class is None


async def test_snap_endpoint_in_gcj02(client: httpx.AsyncClient, login: Login, cover: dict) -> None:
    lon, lat = crs.from_cgcs2000(cover["x"] + 3 / M_PER_DEG_LON, cover["y"], "gcj02")
    r = await client.get(
        "/api/v1/components/snap",
        params={"lon": lon, "lat": lat, "crs": "gcj02", "class": "01001"},
        headers=await login("collector01"),
    )
    assert r.status_code == 200
    assert r.json()["component"]["code"] == cover["code"]


async def test_check_code_class_and_distance(db: Database, cover: dict) -> None:
    async with db.sessions() as session:
        ok = await components.check(session, cover["code"], "01001", cover["x"], cover["y"])
        wrong_class = await components.check(session, cover["code"], "01002", cover["x"], cover["y"])
        far = await components.check(session, cover["code"], "01001", cover["x"] + 0.001, cover["y"])
        missing = await components.check(session, "43120201001999999", "01001", cover["x"], cover["y"])
        malformed = await components.check(session, "12345", "01001", cover["x"], cover["y"])
        legacy = cover["code"][:6] + cover["code"][6:8] + cover["code"][9:]  # the 16-digit 2013 form
        widened = await components.check(session, legacy, "01001", cover["x"], cover["y"])
    assert ok["exists"] and ok["class_matches"] and ok["near"] and ok["problems"] == []
    assert wrong_class["exists"] and not wrong_class["class_matches"]
    assert far["exists"] and not far["near"] and far["distance_m"] > 90
    assert not missing["exists"]
    assert not malformed["exists"] and malformed["problems"]
    assert widened["code"] == cover["code"] and widened["near"]


async def test_register(client: httpx.AsyncClient, login: Login) -> None:
    body = {
        "code": "43120201001990001",
        "class": "01001",
        "owner": "water",
        "location": {"lon": 110.0, "lat": 27.55, "crs": "wgs84"},
        "attributes": {"material": "球墨铸铁"},
    }
    assert (
        await client.post("/api/v1/components", json=body, headers=await login("collector01"))
    ).status_code == 403
    admin = await login("admin")
    r = await client.post("/api/v1/components", json=body, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["owner"]["code"] == "water" and r.json()["attributes"] == {"material": "球墨铸铁"}
    r = await client.post("/api/v1/components", json=body, headers=admin)
    assert r.status_code == 409
    bad = {**body, "code": "43120201002990001", "class": "01002", "owner": "nobody"}
    r = await client.post("/api/v1/components", json=bad, headers=admin)
    assert r.status_code == 422 and r.json()["errors"][0]["field"].endswith(".owner")
    mismatch = {**body, "code": "43120201002990002"}
    r = await client.post("/api/v1/components", json=mismatch, headers=admin)
    assert r.status_code == 422 and "class part" in r.json()["errors"][0]["message"]


async def _count(db: Database, prefix: str) -> int:
    async with db.sessions() as session:
        return await session.scalar(
            text("SELECT count(*) FROM components WHERE code LIKE :p"), {"p": prefix + "%"}
        )


async def test_import_geojson_geopackage_csv(
    client: httpx.AsyncClient, login: Login, db: Database, tmp_path
) -> None:
    admin = await login("planner01")
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [110.001 + i * 1e-4, 27.551]},
            "properties": {"code": f"43120201003{980001 + i}", "owner": "drainage", "diameter_mm": 700},
        }
        for i in range(3)
    ]
    geojson = json.dumps({"type": "FeatureCollection", "features": features})
    r = await client.post(
        "/api/v1/components/import", files={"file": ("covers.geojson", geojson)}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"imported": 3}

    gdf = gpd.GeoDataFrame(
        {"code": ["43120201011970001", "43120201011970002"], "owner": ["gas", "gas"]},
        geometry=[Point(110.002, 27.552), Point(110.0021, 27.552)],
        crs="EPSG:4490",
    ).to_crs(4546)  # in metres: the import reprojects
    path = tmp_path / "gas.gpkg"
    gdf.to_file(path, engine="pyogrio")
    r = await client.post(
        "/api/v1/components/import", files={"file": ("gas.gpkg", path.read_bytes())}, headers=admin
    )
    assert r.status_code == 200, r.text
    async with db.sessions() as session:
        x = await session.scalar(text("SELECT ST_X(geom) FROM components WHERE code = '43120201011970001'"))
    assert abs(x - 110.002) < 1e-7

    lon, lat = crs.from_cgcs2000(110.003, 27.553, "gcj02")
    csv = f"code,lon,lat,owner\n43120201005960001,{lon},{lat},power\n"
    r = await client.post(
        "/api/v1/components/import",
        params={"crs": "gcj02"},
        files={"file": ("power.csv", csv)},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    c = (await client.get("/api/v1/components/43120201005960001", headers=admin)).json()
    assert crs.distance_m(c["location"]["lon"], c["location"]["lat"], 110.003, 27.553) < 0.01

    bad = "code,lon,lat\n43120201005950001,110.0,27.55\nnot-a-code,110.0,27.55\n"
    r = await client.post("/api/v1/components/import", files={"file": ("bad.csv", bad)}, headers=admin)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "[1].code"
    assert await _count(db, "43120201005950001") == 0  # all or nothing
    r = await client.post("/api/v1/components/import", files={"file": ("x.txt", "hello")}, headers=admin)
    assert r.status_code == 422
