"""Responsibility areas (责任区域): CRUD, validation, roles, import, overlaps and the point query.

Runs on its own clone of the seeded database through the real ASGI app with the router.
Areas are drawn as boxes in EPSG:4546 metres around a real demo grid and sent as lon/lat.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import pytest
from shapely.geometry import Polygon, box, mapping, shape
from sqlalchemy import text

from api.db import Database
from api.routers import responsibility as responsibility_router
from geo import responsibility
from geo.crs import project, unproject
from tests.conftest import PASSWORD, CloneDb, make_app

PREFIX = "/api/v1/responsibility-areas"


@pytest.fixture(scope="module")
async def area_db(clone_db: CloneDb) -> AsyncIterator[Database]:
    database = Database(await clone_db(), pool_size=2)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def api(settings, area_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The application with the responsibility router (until api/app.py includes it)."""
    app = make_app(settings, area_db)
    if not any(getattr(r, "path", "").startswith(PREFIX) for r in app.routes):
        app.include_router(responsibility_router.router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.12", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


Auth = Callable[[str], Any]


@pytest.fixture(scope="module")
async def auth(api: httpx.AsyncClient) -> Auth:
    tokens: dict[str, str] = {}

    async def headers(username: str) -> dict[str, str]:
        if username not in tokens:
            r = await api.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[username] = r.json()["access_token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    return headers


@pytest.fixture(scope="module")
async def origin(area_db: Database) -> tuple[float, float]:
    """EPSG:4546 metres of a point in the middle of a 鹤城区 grid."""
    async with area_db.sessions() as s:
        row = (
            await s.execute(
                text(
                    "SELECT ST_X(ST_PointOnSurface(geom)) AS x, ST_Y(ST_PointOnSurface(geom)) AS y "
                    "FROM unit_grids WHERE area_code = 'HC' ORDER BY code LIMIT 1 OFFSET 40"
                )
            )
        ).one()
    return project(row.x, row.y)


def lonlat(poly: Polygon) -> Polygon:
    """An EPSG:4546 polygon in lon/lat."""
    xs, ys = zip(*poly.exterior.coords, strict=True)
    lons, lats = unproject(list(xs), list(ys))
    return Polygon(list(zip(lons, lats, strict=True)))


def square(
    origin: tuple[float, float], dx: float, dy: float, size: float, height: float | None = None
) -> Polygon:
    """A lon/lat box ``size`` × ``height`` m whose south-west corner is ``dx``, ``dy`` m from ``origin``."""
    x, y = origin[0] + dx, origin[1] + dy
    return lonlat(box(x, y, x + size, y + (height or size)))


def body(
    name: str, geom: Polygon, kind: str = "property_compound", owner: str = "wy-01", **extra: Any
) -> dict:
    return {"name": name, "kind": kind, "owner": owner, "geometry": mapping(geom), **extra}


async def create(api: httpx.AsyncClient, auth: Auth, data: dict, who: str = "admin") -> dict:
    r = await api.post(PREFIX, json=data, headers=await auth(who))
    assert r.status_code == 201, r.text
    return r.json()


# --- CRUD -----------------------------------------------------------------------------------------


async def test_crud_round_trip(api: httpx.AsyncClient, auth: Auth, origin) -> None:
    geom = square(origin, 5_000, 5_000, 120, 80)
    created = await create(
        api, auth, body("锦绣花园（测试）", geom, matter_classes=["06010", "06012"]), "planner01"
    )
    assert created["kind"] == "property_compound" and created["kind_name"] == "物业管理区域"
    assert created["owner"] == {"code": "wy-01", "name": "怀化锦绣物业服务有限公司"}
    assert created["matter_classes"] == ["06010", "06012"] and created["generated"] is False
    assert created["area_m2"] == pytest.approx(9_600, rel=0.002)
    assert shape(created["geometry"]).geom_type == "MultiPolygon"
    assert shape(created["geometry"]).hausdorff_distance(geom) < 2e-7
    area_id = created["id"]

    operator = await auth("operator01")
    got = await api.get(f"{PREFIX}/{area_id}", headers=operator)
    assert got.status_code == 200 and got.json()["name"] == "锦绣花园（测试）"

    lon, lat = geom.centroid.x, geom.centroid.y
    bbox = f"{lon - 0.001},{lat - 0.001},{lon + 0.001},{lat + 0.001}"
    listed = await api.get(
        PREFIX, params={"kind": "property_compound", "owner": "wy-01", "bbox": bbox}, headers=operator
    )
    assert [a["id"] for a in listed.json()] == [area_id]
    assert (await api.get(PREFIX, params={"owner": "wy-02", "bbox": bbox}, headers=operator)).json() == []
    fc = (await api.get(PREFIX, params={"bbox": bbox, "format": "geojson"}, headers=operator)).json()
    assert fc["type"] == "FeatureCollection"
    feature = next(f for f in fc["features"] if f["id"] == area_id)
    assert feature["properties"]["owner"] == "wy-01" and feature["geometry"]["type"] == "MultiPolygon"

    moved = square(origin, 5_000, 5_000, 100)
    r = await api.patch(
        f"{PREFIX}/{area_id}",
        json={"name": "锦绣花园二期", "owner": "wy-02", "matter_classes": None, "geometry": mapping(moved)},
        headers=await auth("admin"),
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["name"], changed["owner"]["code"], changed["matter_classes"]) == (
        "锦绣花园二期",
        "wy-02",
        None,
    )
    assert changed["area_m2"] == pytest.approx(10_000, rel=0.002)
    assert changed["kind"] == "property_compound"  # untouched

    r = await api.delete(f"{PREFIX}/{area_id}", headers=await auth("admin"))
    assert r.status_code == 204
    assert (await api.get(f"{PREFIX}/{area_id}", headers=operator)).status_code == 404
    assert (await api.delete(f"{PREFIX}/{area_id}", headers=await auth("admin"))).status_code == 404


async def test_gcj02_geometry_is_converted(api: httpx.AsyncClient, auth: Auth, origin) -> None:
    from geo.crs import wgs84_to_gcj02

    geom = square(origin, 5_400, 5_000, 60)
    xs, ys = zip(*geom.exterior.coords, strict=True)
    gx, gy = wgs84_to_gcj02(list(xs), list(ys))
    drawn = Polygon(list(zip(gx, gy, strict=True)))
    created = await create(api, auth, body("天星小区（火星坐标）", drawn, crs="gcj02"))
    assert shape(created["geometry"]).hausdorff_distance(geom) < 2e-7  # back within mm
    await api.delete(f"{PREFIX}/{created['id']}", headers=await auth("admin"))


async def test_invalid_input_names_the_field(api: httpx.AsyncClient, auth: Auth, origin) -> None:
    admin = await auth("admin")
    good = square(origin, 6_000, 5_000, 50)
    a, b, c, d = list(good.exterior.coords)[:4]
    bowtie = {"type": "Polygon", "coordinates": [[a, c, b, d, a]]}

    async def problems(data: dict) -> dict[str, str]:
        r = await api.post(PREFIX, json=data, headers=admin)
        assert r.status_code == 422, r.text
        return {e["field"]: e["message"] for e in r.json()["errors"]}

    found = await problems({**body("坏多边形", good), "geometry": bowtie})
    assert list(found) == ["geometry"] and "Self-intersection" in found["geometry"]
    found = await problems(body("未知单位", good, owner="wy-99"))
    assert found == {"owner": "unknown unit 'wy-99'"}
    found = await problems(body("未知事项", good, matter_classes=["06010", "99999"]))
    assert found == {"matter_classes": "unknown matter classes: 99999"}
    found = await problems(body("未知类型", good, kind="zoo"))
    assert list(found) == ["kind"] and "unknown kind 'zoo'" in found["kind"]
    metres = {
        "type": "Polygon",
        "coordinates": [
            [[500_000, 3_000_000], [500_100, 3_000_000], [500_000, 3_000_100], [500_000, 3_000_000]]
        ],
    }
    found = await problems({**body("投影坐标", good), "geometry": metres})
    assert "not longitude/latitude" in found["geometry"]
    swapped = {"type": "Polygon", "coordinates": [[[y, x] for x, y in good.exterior.coords]]}
    assert "longitude first" in (await problems({**body("经纬颠倒", good), "geometry": swapped}))["geometry"]
    europe = {"type": "Polygon", "coordinates": [[[x - 100, y + 20] for x, y in good.exterior.coords]]}
    assert "outside China" in (await problems({**body("国外", good), "geometry": europe}))["geometry"]
    point = {"type": "Point", "coordinates": [110.0, 27.55]}
    assert "Polygon or MultiPolygon" in (await problems({**body("点", good), "geometry": point}))["geometry"]
    # Several problems at once: each named.
    found = await problems({**body("", good, owner="nobody", kind="zoo"), "geometry": bowtie})
    assert set(found) == {"name", "kind", "owner", "geometry"}
    # PATCH checks the same way and refuses unknown fields.
    created = await create(api, auth, body("待修改", good))
    r = await api.patch(f"{PREFIX}/{created['id']}", json={"owner": "wy-99"}, headers=admin)
    assert r.status_code == 422 and r.json()["errors"] == [
        {"field": "owner", "message": "unknown unit 'wy-99'"}
    ]
    r = await api.patch(f"{PREFIX}/{created['id']}", json={"name": None}, headers=admin)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"
    assert (await api.patch(f"{PREFIX}/999999", json={"name": "x"}, headers=admin)).status_code == 404
    await api.delete(f"{PREFIX}/{created['id']}", headers=admin)


async def test_roles(api: httpx.AsyncClient, auth: Auth, origin) -> None:
    data = body("权限测试", square(origin, 6_500, 5_000, 50))
    assert (await api.post(PREFIX, json=data)).status_code == 401
    r = await api.post(PREFIX, json=data, headers=await auth("operator01"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (
        await api.post(PREFIX, json={"broken": True}, headers=await auth("operator01"))
    ).status_code == 403
    for who in ("operator01", "supervisor01", "planner01", "unit-water"):
        assert (await api.get(PREFIX, params={"limit": 1}, headers=await auth(who))).status_code == 200, who
    assert (await api.get(PREFIX, headers=await auth("collector01"))).status_code == 403
    assert (await api.get(f"{PREFIX}/overlaps", headers=await auth("operator01"))).status_code == 403
    assert (await api.get(f"{PREFIX}/overlaps", headers=await auth("planner01"))).status_code == 200
    created = await create(api, auth, data, "planner01")
    assert (
        await api.delete(f"{PREFIX}/{created['id']}", headers=await auth("unit-water"))
    ).status_code == 403
    assert (
        await api.patch(f"{PREFIX}/{created['id']}", json={"name": "x"}, headers=await auth("supervisor01"))
    ).status_code == 403
    assert (await api.delete(f"{PREFIX}/{created['id']}", headers=await auth("planner01"))).status_code == 204


# --- import ---------------------------------------------------------------------------------------


def frame(origin: tuple[float, float], dy: float, rows: list[dict]) -> gpd.GeoDataFrame:
    """Rows with boxes drawn in EPSG:4546 (kept in that CRS)."""
    geoms = [
        box(origin[0] + 7_000 + 150 * i, origin[1] + dy, origin[0] + 7_100 + 150 * i, origin[1] + dy + 60)
        for i in range(len(rows))
    ]
    return gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4546")


async def upload(api: httpx.AsyncClient, auth: Auth, path: Path) -> httpx.Response:
    with path.open("rb") as f:
        return await api.post(
            f"{PREFIX}/import", files={"file": (path.name, f.read())}, headers=await auth("planner01")
        )


async def test_import_geojson_and_geopackage_in_4546(
    api: httpx.AsyncClient, auth: Auth, origin, tmp_path: Path
) -> None:
    rows = [
        {
            "name": "导入花园一期",
            "kind": "property_compound",
            "owner": "wy-03",
            "matter_classes": "06010, 06012",
        },
        {"name": "导入公园", "kind": "公园", "owner": "garden", "matter_classes": None},
    ]
    for suffix, driver, dy in ((".geojson", "GeoJSON", 5_000), (".gpkg", "GPKG", 5_200)):
        gdf = frame(origin, dy, rows)
        path = tmp_path / f"areas{suffix}"
        gdf.to_file(path, driver=driver, engine="pyogrio")
        assert gpd.read_file(path).crs.to_epsg() == 4546  # the file really is in metres
        r = await upload(api, auth, path)
        assert r.status_code == 200, r.text
        assert r.json() == {"imported": 2}
        expected = gdf.to_crs(4490).geometry
        lon, lat = expected.iloc[0].centroid.x, expected.iloc[0].centroid.y
        found = (
            await api.get(
                f"{PREFIX}/at",
                params={"lon": lon, "lat": lat, "crs": "cgcs2000"},
                headers=await auth("operator01"),
            )
        ).json()
        mine = [a for a in found["areas"] if a["name"] == "导入花园一期"]
        assert len(mine) == 1, suffix
        area = mine[0]
        assert (area["kind"], area["owner"]["code"], area["matter_classes"]) == (
            "property_compound",
            "wy-03",
            ["06010", "06012"],
        )
        assert area["area_m2"] == pytest.approx(6_000, rel=0.003)  # 100 × 60 m survived the reprojection
        stored = shape(
            (await api.get(f"{PREFIX}/{area['id']}", headers=await auth("operator01"))).json()["geometry"]
        )
        assert stored.hausdorff_distance(expected.iloc[0]) < 2e-7
        park = (
            await api.get(
                PREFIX,
                params={"kind": "park", "bbox": ",".join(map(str, expected.iloc[1].bounds))},
                headers=await auth("operator01"),
            )
        ).json()
        assert [(p["name"], p["owner"]["code"], p["matter_classes"]) for p in park] == [
            ("导入公园", "garden", None)
        ]
        for a in (area["id"], park[0]["id"]):
            await api.delete(f"{PREFIX}/{a}", headers=await auth("admin"))


async def test_a_bad_row_refuses_the_whole_file(
    api: httpx.AsyncClient, auth: Auth, area_db: Database, origin, tmp_path: Path
) -> None:
    async with area_db.sessions() as s:
        before = await s.scalar(text("SELECT count(*) FROM responsibility_areas"))
    rows = [
        {"name": "好的一行", "kind": "property_compound", "owner": "wy-01", "matter_classes": None},
        {"name": "坏的一行", "kind": "property_compound", "owner": "wy-99", "matter_classes": "06010,99999"},
        {"name": "又一行", "kind": "park", "owner": "garden", "matter_classes": None},
    ]
    path = tmp_path / "bad.geojson"
    frame(origin, 5_400, rows).to_crs(4490).to_file(path, driver="GeoJSON", engine="pyogrio")
    r = await upload(api, auth, path)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"] == [
        {"field": "[1].owner", "message": "unknown unit 'wy-99'"},
        {"field": "[1].matter_classes", "message": "unknown matter classes: 99999"},
    ]
    assert "1 of 3 rows of bad.geojson are invalid, nothing was imported" in problem["detail"]
    async with area_db.sessions() as s:
        assert await s.scalar(text("SELECT count(*) FROM responsibility_areas")) == before
    # A file without the required properties, and a file of another type.
    path = tmp_path / "bare.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "x"},
                        "geometry": mapping(square(origin, 0, 0, 10)),
                    }
                ],
            }
        )
    )
    r = await upload(api, auth, path)
    assert r.status_code == 422 and "lacks the properties kind, owner" in r.json()["detail"]
    path = tmp_path / "areas.csv"
    path.write_text("name,kind\n")
    assert (await upload(api, auth, path)).status_code == 422


# --- overlaps and the point query -----------------------------------------------------------------


async def test_overlaps_between_areas_of_one_kind(api: httpx.AsyncClient, auth: Auth, origin) -> None:
    a = await create(api, auth, body("重叠花园甲", square(origin, 8_000, 5_000, 100)))
    b = await create(
        api, auth, body("重叠花园乙", square(origin, 8_080, 5_000, 100), owner="wy-02")
    )  # 20 × 100 m shared
    touching = await create(
        api, auth, body("相邻花园丙", square(origin, 8_180, 5_000, 100))
    )  # shares b's edge only
    park = await create(
        api, auth, body("重叠公园", square(origin, 8_050, 5_050, 100), kind="park", owner="garden")
    )
    mine = {a["id"], b["id"], touching["id"], park["id"]}
    planner = await auth("planner01")

    found = (
        await api.get(f"{PREFIX}/overlaps", params={"kind": "property_compound"}, headers=planner)
    ).json()
    pairs = [o for o in found if {o["a"]["id"], o["b"]["id"]} <= mine]
    assert len(pairs) == 1
    pair = pairs[0]
    assert (pair["a"]["id"], pair["b"]["id"], pair["kind_name"]) == (a["id"], b["id"], "物业管理区域")
    assert (pair["a"]["owner"], pair["b"]["owner"]) == ("wy-01", "wy-02")
    assert pair["overlap_m2"] == pytest.approx(2_000, rel=0.01)
    assert shape(pair["geometry"]).area > 0
    # Unfiltered: the compound overlapping the park is still no pair (different kinds).
    everything = (await api.get(f"{PREFIX}/overlaps", headers=planner)).json()
    assert [o for o in everything if {o["a"]["id"], o["b"]["id"]} <= mine] == pairs
    # Two areas for disjoint classes never compete for a case: not reported.
    r = await api.patch(f"{PREFIX}/{a['id']}", json={"matter_classes": ["06010"]}, headers=planner)
    r = await api.patch(f"{PREFIX}/{b['id']}", json={"matter_classes": ["06017"]}, headers=planner)
    assert r.status_code == 200
    found = (
        await api.get(f"{PREFIX}/overlaps", params={"kind": "property_compound"}, headers=planner)
    ).json()
    assert [o for o in found if {o["a"]["id"], o["b"]["id"]} <= mine] == []
    for x in mine:
        await api.delete(f"{PREFIX}/{x}", headers=planner)


async def test_areas_at_respect_matter_classes(
    api: httpx.AsyncClient, auth: Auth, area_db: Database, origin
) -> None:
    park = await create(
        api, auth, body("滨河公园", square(origin, 9_000, 5_000, 200), kind="park", owner="garden")
    )
    bank = await create(
        api,
        auth,
        body(
            "滨河风光带",
            square(origin, 9_050, 5_000, 60, 200),
            kind="river_bank",
            owner="garden",
            matter_classes=["06025", "06026"],
        ),
    )
    inside = square(origin, 9_070, 5_100, 1).centroid
    operator = await auth("operator01")

    async def at(**params: Any) -> list[tuple[str, str]]:
        r = await api.get(
            f"{PREFIX}/at",
            params={"lon": inside.x, "lat": inside.y, "crs": "cgcs2000", **params},
            headers=operator,
        )
        assert r.status_code == 200, r.text
        return [(x["name"], x["kind"]) for x in r.json()["areas"] if x["id"] in (park["id"], bank["id"])]

    assert await at() == [("滨河风光带", "river_bank"), ("滨河公园", "park")]  # smallest first
    assert await at(category="06025") == [("滨河风光带", "river_bank"), ("滨河公园", "park")]
    assert await at(category="06010") == [("滨河公园", "park")]  # the bank is for water matters only
    assert await at(kind="river_bank", category="06010") == []
    async with area_db.sessions() as s:
        hits = await responsibility.owners_at(s, inside.x, inside.y, ["park", "river_bank"], "06026")
    assert {k: (h.name, h.owner) for k, h in hits.items() if h.id in (park["id"], bank["id"])} == {
        "park": ("滨河公园", "garden"),
        "river_bank": ("滨河风光带", "garden"),
    }
    # A point outside both; and a GCJ-02 point is converted first.
    outside = square(origin, 9_300, 5_000, 1).centroid
    r = await api.get(
        f"{PREFIX}/at", params={"lon": outside.x, "lat": outside.y, "crs": "cgcs2000"}, headers=operator
    )
    assert [x for x in r.json()["areas"] if x["id"] in (park["id"], bank["id"])] == []
    from geo.crs import wgs84_to_gcj02

    gx, gy = wgs84_to_gcj02(inside.x, inside.y)
    r = await api.get(f"{PREFIX}/at", params={"lon": gx, "lat": gy, "crs": "gcj02"}, headers=operator)
    assert r.json()["location"]["lon"] == pytest.approx(inside.x, abs=1e-7)
    assert {x["id"] for x in r.json()["areas"]} >= {park["id"], bank["id"]}
    for x in (park, bank):
        await api.delete(f"{PREFIX}/{x['id']}", headers=await auth("admin"))
