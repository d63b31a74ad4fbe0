"""Demo addressing (geo.addressing) and geocoding (geo.geocode, /api/v1/geocode) on real PostGIS.

The module works on its own clone of the seeded template with the demo roads, door plates and
landmarks loaded, and on an app that includes the geocode router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import pairwise
from typing import Any

import httpx
import numpy as np
import pytest
import shapely
from fastapi import FastAPI
from pyproj import Geod
from sqlalchemy import text

from api.db import Database
from api.routers import geocode as geocode_router
from api.settings import Settings
from geo import addressing, boundaries, crs, geocode
from geo.locator import locate
from grids import demo
from tests.conftest import PASSWORD, CloneDb, make_app

_GEOD = Geod(ellps="GRS80")

# An arterial's end, 80 m on past the edge of the jurisdiction: outside every grid, near the road.
_BEYOND_A_ROAD_END = """
WITH ends AS (
    SELECT r.id, r.name, ST_EndPoint(d.geom) AS e, ST_PointN(d.geom, -2) AS prev
    FROM roads r, ST_Dump(r.geom) d WHERE r.kind = 'arterial'
    UNION ALL
    SELECT r.id, r.name, ST_StartPoint(d.geom), ST_PointN(d.geom, 2)
    FROM roads r, ST_Dump(r.geom) d WHERE r.kind = 'arterial'
), beyond AS (
    SELECT id, name, ST_Project(e::geography, 80, ST_Azimuth(prev::geography, e::geography))::geometry AS p
    FROM ends
)
SELECT b.name, ST_X(b.p) AS x, ST_Y(b.p) AS y FROM beyond b
WHERE NOT EXISTS (SELECT 1 FROM unit_grids u WHERE ST_DWithin(u.geom::geography, b.p::geography, 60))
ORDER BY b.id LIMIT 1
"""


@pytest.fixture(scope="module")
def city() -> demo.DemoCity:
    return demo.generate({code: outline for code, (_, outline) in boundaries.county_outlines().items()})


@pytest.fixture(scope="module")
async def gdb(clone_db: CloneDb, city: demo.DemoCity) -> AsyncIterator[Database]:
    """A clone of the template with the demo addressing loaded (twice: loading is idempotent)."""
    database = Database(await clone_db())
    async with database.sessions() as session:
        first = await addressing.load_addressing(session, city)
        again = await addressing.load_addressing(session, city)
        await session.commit()
        stored = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM roads WHERE generated) AS roads, "
                    "(SELECT count(*) FROM addresses WHERE generated) AS addresses, "
                    "(SELECT count(*) FROM landmarks WHERE generated) AS landmarks"
                )
            )
        ).one()
    assert first == again == stored._asdict()
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def gclient(settings: Settings, gdb: Database) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = make_app(settings, gdb)
    if not any(getattr(r, "path", "").startswith("/api/v1/geocode/") for r in app.routes):
        app.include_router(geocode_router.router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


Headers = Callable[[str], Awaitable[dict[str, str]]]


@pytest.fixture(scope="module")
async def as_user(gclient: httpx.AsyncClient) -> Headers:
    tokens: dict[str, str] = {}

    async def headers(username: str) -> dict[str, str]:
        if username not in tokens:
            r = await gclient.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[username] = r.json()["access_token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    return headers


async def _one(db: Database, sql: str, **params: Any) -> Any:
    async with db.sessions() as session:
        return (await session.execute(text(sql), params)).one()


@pytest.fixture(scope="module")
async def plate(gdb: Database) -> Any:
    return await _one(
        gdb,
        "SELECT a.id, a.label, a.number, r.name AS road, ST_X(a.geom) AS x, ST_Y(a.geom) AS y "
        "FROM addresses a JOIN roads r ON r.id = a.road_id WHERE a.label = '迎丰中路23号'",
    )


@pytest.fixture(scope="module")
async def lone_component(gdb: Database) -> Any:
    """An in-use component with no other component within 40 m, and its class name."""
    return await _one(
        gdb,
        """SELECT c.code, k.name AS class_name, ST_X(c.geom) AS x, ST_Y(c.geom) AS y
           FROM components c JOIN component_classes k ON k.code = c.class_code
           WHERE c.status = 'in_use' AND NOT EXISTS (
               SELECT 1 FROM components o WHERE o.code <> c.code
                 AND ST_DWithin(o.geom::geography, c.geom::geography, 40))
           ORDER BY c.code LIMIT 1""",
    )


# --- the generated addressing ---------------------------------------------------------------


def test_generated_addressing(city: demo.DemoCity) -> None:
    roads, plates, landmarks = addressing.addressing(city)
    assert len({(r.name, r.area_code) for r in roads}) == len(roads)
    assert 100 <= len(landmarks) <= 200 and len({m.name for m in landmarks}) == len(landmarks)
    assert {m.kind for m in landmarks} == {"school", "market", "hospital", "park", "bus_stop", "compound"}
    assert {"怀化市第三中学", "舞水公园", "锦绣花园", "怀化市第一人民医院"} <= {m.name for m in landmarks}
    assert all(m.name.endswith("公交站") for m in landmarks if m.kind == "bus_stop")
    grids = shapely.STRtree([g.geom for g in city.grids])
    on_blocks = grids.query([m.geom for m in landmarks], predicate="within")
    assert len(set(on_blocks[0].tolist())) == len(landmarks)  # every landmark lies in a grid

    # 左单右双, numbers rising west→east: odd plates on the north side of an east–west road.
    road = next(r for r in roads if r.name == "迎丰中路")
    mine = [p for p in plates if p.road == road.name and p.area_code == road.area_code]
    assert len(mine) > 200 and len({p.number for p in mine}) == len(mine)
    xy = shapely.get_coordinates(road.geom)
    east_west = abs(xy[-1, 0] - xy[0, 0]) >= abs(xy[-1, 1] - xy[0, 1])
    for parity in (1, 0):
        side = sorted((p for p in mine if p.number % 2 == parity), key=lambda p: p.number)
        along = np.array([p.geom.x if east_west else -p.geom.y for p in side])
        assert (np.diff(along) > 0).mean() > 0.95  # numbers follow the road (bends aside)
        spacing = np.array([_GEOD.inv(a.geom.x, a.geom.y, b.geom.x, b.geom.y)[2] for a, b in pairwise(side)])
        assert 15 < float(np.median(spacing)) < 35
    assert all(p.label == f"{p.road}{p.number}号" for p in mine)
    again = addressing.addressing(city)
    assert [p.geom.wkb for p in again[1]] == [p.geom.wkb for p in plates]
    assert [m.name for m in again[2]] == [m.name for m in landmarks]


# --- reverse --------------------------------------------------------------------------------


async def test_reverse_next_to_a_door_plate(gdb: Database, plate: Any) -> None:
    lon, lat, _ = _GEOD.fwd(plate.x, plate.y, 0, 3)
    async with gdb.sessions() as session:
        out = await geocode.reverse(session, lon, lat)
        where = await locate(session, lon, lat, "cgcs2000")
    assert out["road"]["name"] == "迎丰中路" and out["road"]["distance_m"] < 30
    assert out["address"]["label"] == "迎丰中路23号" and out["address"]["distance_m"] == pytest.approx(
        3, abs=0.2
    )
    assert out["grid"] == where.grid
    assert out["text"].startswith(
        f"{where.area[1]} {where.street[1]} {where.community[1]} 网格 {where.grid}，"
    )
    assert "迎丰中路 23 号附近" in out["text"]


async def test_reverse_names_the_component_with_direction(gdb: Database, lone_component: Any) -> None:
    c = lone_component
    lon, lat, _ = _GEOD.fwd(c.x, c.y, 90, 8)  # 8 m east of the component
    async with gdb.sessions() as session:
        out = await geocode.reverse(session, lon, lat)
    assert out["component"]["code"] == c.code.strip()
    assert out["component"]["direction"] == "东" and out["component"]["distance_m"] == pytest.approx(
        8, abs=0.1
    )
    assert out["text"].endswith(f"{c.class_name} {c.code.strip()} 东 8 米")
    lon, lat, _ = _GEOD.fwd(c.x, c.y, 225, 12)  # south-west
    async with gdb.sessions() as session:
        out = await geocode.reverse(session, lon, lat)
    assert f"{c.class_name} {c.code.strip()} 西南 12 米" in out["text"]


async def test_reverse_outside_the_grids_near_a_road(gdb: Database) -> None:
    beyond = await _one(gdb, _BEYOND_A_ROAD_END)
    async with gdb.sessions() as session:
        out = await geocode.reverse(session, beyond.x, beyond.y)
    assert out["grid"] is None and out["community"] is None
    # The road it runs on, or one still nearer.
    assert out["road"]["distance_m"] <= 80.5
    assert out["text"] and "网格" not in out["text"] and out["road"]["name"] in out["text"]
    async with gdb.sessions() as session:
        nowhere = await geocode.reverse(session, 110.5, 27.9)
    assert nowhere["road"] is None and nowhere["text"].startswith("东经 110.500000°")


# --- search ---------------------------------------------------------------------------------


async def _search(db: Database, q: str, **kw: Any) -> list[dict[str, Any]]:
    async with db.sessions() as session:
        return await geocode.search(session, q, **kw)


def test_normalise() -> None:
    assert geocode.normalise(" 怀化市迎丰中路　２３ 号附近 ") == "迎丰中路23"
    assert geocode.normalise("ＡＢ１２") == "AB12"


async def test_search_roads_full_partial_and_variant(gdb: Database) -> None:
    full = await _search(gdb, "迎丰中路")
    assert (full[0]["name"], full[0]["kind"], full[0]["score"]) == ("迎丰中路", "road", 1.0)
    assert full[0]["grid"] and full[0]["detail"].startswith("经开区")

    partial = await _search(gdb, "迎丰")
    names = [c["name"] for c in partial]
    assert {"迎丰中路", "迎丰路", "迎丰社区"} <= set(names) and all("迎丰" in n for n in names)
    assert all(a["score"] >= b["score"] for a, b in pairwise(partial))

    # 路/大道/街 are interchangeable: the demo has 湖天路 and 钟坡大道 only.
    assert [(c["name"], c["kind"]) for c in (await _search(gdb, "湖天大道"))[:1]] == [("湖天路", "road")]
    assert (await _search(gdb, "钟坡路"))[0]["name"] == "钟坡大道"


async def test_search_road_and_full_width_number(gdb: Database, plate: Any) -> None:
    for q in ("迎丰中路２３号", "迎丰中路 23", "迎丰中路23号附近"):
        first = (await _search(gdb, q))[0]
        assert (first["name"], first["kind"], first["score"]) == ("迎丰中路23号", "address", 1.0)
        assert first["location"] == {
            "lon": pytest.approx(plate.x, abs=1e-6),
            "lat": pytest.approx(plate.y, abs=1e-6),
        }
        assert first["ref"] == f"address:{plate.id}"
    # A number the road does not have: the nearest one on the same side, ranked lower.
    far = (await _search(gdb, "迎丰中路9999号"))[0]
    assert far["kind"] == "address" and far["name"].startswith("迎丰中路") and far["score"] < 1
    assert int(far["name"].removeprefix("迎丰中路").removesuffix("号")) % 2 == 1


async def test_search_landmark_community_and_crossing(gdb: Database) -> None:
    school = (await _search(gdb, "第三中学"))[0]
    assert (school["name"], school["kind"]) == ("怀化市第三中学", "landmark:school") and school["grid"]
    assert (await _search(gdb, "舞水公"))[0]["name"] == "舞水公园"
    assert (await _search(gdb, "怀化市第一人民医院"))[0]["score"] == 1.0
    community = await _one(
        gdb, "SELECT code, name FROM regions WHERE level = 'community' ORDER BY code LIMIT 1"
    )
    found = (await _search(gdb, community.name))[0]
    assert (found["name"], found["kind"]) == (community.name, "community")
    assert found["grid"].startswith(community.code)
    crossing = await _one(
        gdb,
        "SELECT a.name AS a, b.name AS b FROM roads a JOIN roads b ON a.id < b.id AND ST_Crosses(a.geom, b.geom) "
        "WHERE a.kind = 'arterial' AND b.kind = 'arterial' ORDER BY a.id, b.id LIMIT 1",
    )
    hit = (await _search(gdb, f"{crossing.a}和{crossing.b}路口"))[0]
    assert (hit["name"], hit["kind"]) == (f"{crossing.a}与{crossing.b}交叉口", "crossing")


async def test_search_component_codes(gdb: Database, lone_component: Any) -> None:
    code = lone_component.code.strip()
    legacy = code[:8] + code[9:]  # GB/T 30428.2-2013: 2+2-digit class (the minor's leading 0 dropped)
    assert code[8] == "0"
    for q in (code, legacy, "".join(chr(ord(d) + 0xFEE0) for d in code)):  # also full-width digits
        first = (await _search(gdb, q))[0]
        assert (first["kind"], first["ref"], first["score"]) == ("component", f"component:{code}", 1.0)
        assert first["name"] == f"{lone_component.class_name} {code}"
        assert first["location"]["lon"] == pytest.approx(lone_component.x, abs=1e-6)
        assert first["grid"]
    typing = await _search(gdb, code[:12])
    assert typing and all(c["ref"].startswith(f"component:{code[:12]}") for c in typing)
    assert await _search(gdb, "123") == []


async def test_near_orders_equal_matches_by_distance(gdb: Database) -> None:
    twins = await _one(
        gdb,
        "SELECT name, array_agg(id ORDER BY id) AS ids, "
        "array_agg(ST_X(ST_ClosestPoint(geom, ST_Centroid(geom))) ORDER BY id) AS xs, "
        "array_agg(ST_Y(ST_ClosestPoint(geom, ST_Centroid(geom))) ORDER BY id) AS ys "
        "FROM roads GROUP BY name HAVING count(*) = 2 ORDER BY name LIMIT 1",
    )
    for road_id, x, y in zip(twins.ids, twins.xs, twins.ys, strict=True):
        found = await _search(gdb, twins.name, near=(x, y))
        same = [c for c in found if c["name"] == twins.name]
        assert len(same) == 2 and same[0]["score"] == same[1]["score"] == 1.0
        assert same[0]["ref"] == f"road:{road_id}" and same[0]["distance_m"] < same[1]["distance_m"]


# --- API ------------------------------------------------------------------------------------


async def test_api_roles_and_validation(gclient: httpx.AsyncClient, as_user: Headers) -> None:
    params = {"lon": 110.0, "lat": 27.55}
    assert (await gclient.get("/api/v1/geocode/reverse", params=params)).status_code == 401
    for user in ("collector01", "unit-water", "planner01"):
        r = await gclient.get("/api/v1/geocode/reverse", params=params, headers=await as_user(user))
        assert r.status_code == 200 and r.json()["text"]
    for user in ("collector01", "operator01", "unit-water"):
        r = await gclient.get("/api/v1/geocode/search", params={"q": "迎丰"}, headers=await as_user(user))
        assert r.status_code == 200 and r.json()
    r = await gclient.get(
        "/api/v1/geocode/intake-candidates", params={"q": "迎"}, headers=await as_user("collector01")
    )
    assert r.status_code == 403
    r = await gclient.get(
        "/api/v1/geocode/intake-candidates", params={"q": "迎"}, headers=await as_user("operator01")
    )
    assert r.status_code == 200 and 0 < len(r.json()) <= 8
    headers = await as_user("operator01")
    for q in ("", "  　"):
        r = await gclient.get("/api/v1/geocode/search", params={"q": q}, headers=headers)
        assert r.status_code == 422, q
    r = await gclient.get("/api/v1/geocode/search", params={"q": "迎丰", "near": "east"}, headers=headers)
    assert r.status_code == 422


async def test_api_crs_conversion(gclient: httpx.AsyncClient, as_user: Headers, plate: Any) -> None:
    headers = await as_user("operator01")
    lon, lat = crs.from_cgcs2000(plate.x, plate.y, "gcj02")
    r = await gclient.get(
        "/api/v1/geocode/reverse", params={"lon": lon, "lat": lat, "crs": "gcj02"}, headers=headers
    )
    body = r.json()
    assert body["address"]["label"] == "迎丰中路23号" and body["address"]["distance_m"] < 0.5
    assert body["address"]["location"] == {
        "lon": pytest.approx(lon, abs=1e-6),
        "lat": pytest.approx(lat, abs=1e-6),
    }

    r = await gclient.get(
        "/api/v1/geocode/search", params={"q": "迎丰中路23号", "crs": "bd09", "limit": 1}, headers=headers
    )
    (hit,) = r.json()
    blon, blat = crs.from_cgcs2000(plate.x, plate.y, "bd09")
    assert hit["location"] == {"lon": pytest.approx(blon, abs=1e-6), "lat": pytest.approx(blat, abs=1e-6)}

    r = await gclient.get(f"/api/v1/geocode/places/{hit['ref']}", params={"crs": "gcj02"}, headers=headers)
    assert r.status_code == 200 and r.json()["name"] == "迎丰中路23号" and r.json()["grid"] == hit["grid"]
    assert r.json()["location"]["lon"] == pytest.approx(lon, abs=1e-6)
    assert (await gclient.get("/api/v1/geocode/places/road:0", headers=headers)).status_code == 404
    assert (await gclient.get("/api/v1/geocode/places/road:1-2", headers=headers)).status_code == 422
