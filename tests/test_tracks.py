"""GPS tracks: bulk intake located to grids, idempotent resends, limits, reading back, access."""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.copies import Copies
from api.db import Database
from api.routers import tracks as tracks_router
from geo import crs
from geo.errors import OutsideJurisdiction
from geo.locator import locate
from tests.conftest import Login, make_app

CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
async def tclient(settings, db: Database, copies: Copies) -> AsyncIterator[httpx.AsyncClient]:
    """The application with the tracks router (until api/app.py includes it)."""
    app = make_app(settings, db)
    copies.attach(app)
    if not any(getattr(r, "path", "") == "/api/v1/tracks" for r in app.routes):
        app.include_router(tracks_router.router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.11", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


@pytest.fixture(scope="module")
async def grid_points(db: Database) -> list[tuple[str, float, float]]:
    """2,000 random points (CGCS2000) inside 100 grids spread over the city, with their grid."""
    async with db.sessions() as session:
        rows = await session.execute(
            text("""
            SELECT g.code, ST_X(d.geom) AS x, ST_Y(d.geom) AS y
            FROM (SELECT code, geom FROM unit_grids ORDER BY md5(code) LIMIT 100) g,
                 LATERAL ST_Dump(ST_GeneratePoints(g.geom, 20, 7)) d
            ORDER BY g.code, d.path""")
        )
        return [(r.code.strip(), r.x, r.y) for r in rows]


@pytest.fixture(scope="module")
async def east_edge(db: Database) -> tuple[float, float]:
    """The easternmost vertex of all grids: nothing of the jurisdiction lies east of it."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT ST_X(d.geom) AS x, ST_Y(d.geom) AS y FROM unit_grids g, "
                    "LATERAL ST_DumpPoints(g.geom) d ORDER BY ST_X(d.geom) DESC LIMIT 1"
                )
            )
        ).one()
    return row.x, row.y


def east_of(x: float, y: float, metres: float) -> float:
    return x + metres / (111_320.0 * math.cos(math.radians(y)))


def point(x: float, y: float, t: datetime, system: str = "cgcs2000", **extra: Any) -> dict[str, Any]:
    lon, lat = crs.from_cgcs2000(x, y, system)
    return {"lon": lon, "lat": lat, "crs": system, "accuracy_m": 8.0, "t": t.isoformat(), **extra}


async def stored(db: Database, username: str, since: datetime, until: datetime) -> list[Any]:
    async with db.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT p.t, p.grid_code, ST_X(p.geom) AS x, ST_Y(p.geom) AS y, p.accuracy_m FROM track_points p "
                "JOIN users u ON u.id = p.collector_id WHERE u.username = :u AND p.t >= :a AND p.t < :b ORDER BY p.t"
            ),
            {"u": username, "a": since, "b": until},
        )
        return rows.all()


async def test_batch_is_located_in_bulk_and_resending_is_harmless(
    tclient: httpx.AsyncClient, login: Login, db: Database, grid_points
) -> None:
    base = datetime(2026, 3, 2, 8, 0, tzinfo=CST)
    systems = ["cgcs2000", "wgs84", "gcj02", "bd09"]
    batch = [
        point(x, y, base + timedelta(seconds=i), systems[i % 4]) for i, (_, x, y) in enumerate(grid_points)
    ]
    assert len(batch) == 2000
    me = await login("collector01")
    r = await tclient.post("/api/v1/tracks", json={"points": batch}, headers=me)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2000, "duplicates": 0}

    rows = await stored(db, "collector01", base, base + timedelta(hours=1))
    assert len(rows) == 2000
    # Every point lies in the grid it was drawn in, whatever system it was sent in.
    assert [r.grid_code.strip() for r in rows] == [code for code, _, _ in grid_points]
    assert max(crs.distance_m(r.x, r.y, x, y) for r, (_, x, y) in zip(rows, grid_points, strict=True)) < 0.01
    async with db.sessions() as session:
        for i in (0, 777, 1999):
            where = await locate(session, batch[i]["lon"], batch[i]["lat"], batch[i]["crs"])
            assert where.grid == rows[i].grid_code.strip()

    again = await tclient.post("/api/v1/tracks", json={"points": batch}, headers=me)
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 2000}
    assert len(await stored(db, "collector01", base, base + timedelta(hours=1))) == 2000
    # The same times belong to another collector's track all the same.
    theirs = await tclient.post(
        "/api/v1/tracks", json={"points": batch[:10]}, headers=await login("collector02")
    )
    assert theirs.json() == {"accepted": 10, "duplicates": 0}


async def test_mixed_batch_out_of_order_and_outside(
    tclient: httpx.AsyncClient, login: Login, db: Database, grid_points, east_edge
) -> None:
    base = datetime(2026, 3, 3, 8, 0, tzinfo=CST)
    me = await login("collector01")
    old = [point(x, y, base + timedelta(minutes=i)) for i, (_, x, y) in enumerate(grid_points[:10])]
    assert (await tclient.post("/api/v1/tracks", json={"points": old}, headers=me)).json() == {
        "accepted": 10,
        "duplicates": 0,
    }
    new = [point(x, y, base + timedelta(minutes=20 + i)) for i, (_, x, y) in enumerate(grid_points[100:110])]
    far_x = east_of(*east_edge, 5000)
    near_x = east_of(*east_edge, 20)
    far = point(far_x, east_edge[1], base + timedelta(minutes=40))
    near = point(near_x, east_edge[1], base + timedelta(minutes=41))
    # The same instant as old[0] written in UTC, and a second fix at new[0]'s time elsewhere.
    resent = [{**p, "t": datetime.fromisoformat(p["t"]).astimezone(UTC).isoformat()} for p in old[:5]]
    repeat = {**point(*grid_points[500][1:], base + timedelta(minutes=20))}
    batch = [*resent, *new, far, near]
    random.Random(5).shuffle(batch)
    batch.append(repeat)  # after new[0] in the batch: new[0] is the one kept
    r = await tclient.post("/api/v1/tracks", json={"points": batch}, headers=me)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 12, "duplicates": 6}

    async with db.sessions() as session:
        with pytest.raises(OutsideJurisdiction):
            await locate(session, far_x, east_edge[1], "cgcs2000")
        snapped = await locate(session, near_x, east_edge[1], "cgcs2000")
    assert snapped.snapped_m is not None

    read = await tclient.get(
        "/api/v1/tracks",
        params={"from": base.isoformat(), "to": (base + timedelta(hours=1)).isoformat()},
        headers=me,
    )
    assert read.status_code == 200, read.text
    track = read.json()
    assert len(track) == 22
    times = [datetime.fromisoformat(p["t"]) for p in track]
    assert times == sorted(times) and len(set(times)) == 22
    by_t = {datetime.fromisoformat(p["t"]): p for p in track}
    assert by_t[base + timedelta(minutes=40)]["grid"] is None  # stored although outside
    assert abs(by_t[base + timedelta(minutes=40)]["lon"] - far_x) < 1e-9
    assert by_t[base + timedelta(minutes=41)]["grid"] == snapped.grid
    kept = by_t[base + timedelta(minutes=20)]
    assert abs(kept["lon"] - new[0]["lon"]) < 1e-9 and kept["grid"] == grid_points[100][0]
    assert kept["accuracy_m"] == 8.0


async def test_limits_and_bad_points_store_nothing(
    tclient: httpx.AsyncClient, login: Login, db: Database, grid_points
) -> None:
    base = datetime(2026, 3, 4, 8, 0, tzinfo=CST)
    me = await login("collector01")
    _, x, y = grid_points[0]
    many = [point(x, y, base + timedelta(seconds=i)) for i in range(10_001)]
    r = await tclient.post("/api/v1/tracks", json={"points": many}, headers=me)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    r = await tclient.post("/api/v1/tracks", json={"points": many[:10_000]}, headers=me)
    assert r.status_code == 200 and r.json() == {"accepted": 10_000, "duplicates": 0}
    later = base + timedelta(days=1)

    async def refused(body: Any, field: str) -> None:
        if isinstance(body, bytes):
            r = await tclient.post("/api/v1/tracks", content=body, headers=me)
        else:
            r = await tclient.post("/api/v1/tracks", json=body, headers=me)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_input" and r.json()["errors"][0]["field"] == field

    good = [point(x, y, later + timedelta(seconds=i)) for i in range(20)]
    await refused({"points": [*good[:17], {**good[17], "lon": 200.0}, *good[18:]]}, "points.17.lon")
    await refused({"points": [*good[:3], {k: v for k, v in good[3].items() if k != "t"}]}, "points.3.t")
    await refused({"points": [{**good[0], "t": "2026-03-05T08:00:00"}]}, "points.0.t")  # no offset
    await refused({"points": [{**good[0], "crs": "epsg3857"}]}, "points.0.crs")
    await refused({"points": [{**good[0], "accuracy_m": -1}]}, "points.0.accuracy_m")
    await refused({"points": []}, "points")
    await refused({"pts": good}, "points")
    await refused(b"{not json", "body")
    garbage = await tclient.post("/api/v1/tracks", json={"points": [{"lon": "x"}] * 100}, headers=me)
    assert garbage.status_code == 422 and len(garbage.json()["errors"]) == 50  # the first ones, not all
    assert await stored(db, "collector01", later, later + timedelta(hours=1)) == []

    huge = json.dumps({"points": good, "pad": "x" * (9 * 1024 * 1024)})
    r = await tclient.post("/api/v1/tracks", content=huge, headers={**me, "content-type": "application/json"})
    assert r.status_code == 413
    assert await stored(db, "collector01", later, later + timedelta(hours=1)) == []


async def test_a_body_without_length_is_bounded_while_read(tclient: httpx.AsyncClient, login: Login) -> None:
    me = await login("collector01")

    async def chunked() -> Any:  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    r = await tclient.post(
        "/api/v1/tracks", content=chunked(), headers={**me, "content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


async def test_reading_back_and_who_may(
    tclient: httpx.AsyncClient, login: Login, db: Database, grid_points
) -> None:
    base = datetime(2026, 3, 6, 8, 0, tzinfo=CST)
    me = await login("collector03")
    batch = [point(x, y, base + timedelta(minutes=i)) for i, (_, x, y) in enumerate(grid_points[:30])]
    assert (await tclient.post("/api/v1/tracks", json={"points": batch}, headers=me)).status_code == 200
    window = {
        "from": (base + timedelta(minutes=10)).isoformat(),
        "to": (base + timedelta(minutes=20)).isoformat(),
    }

    r = await tclient.get("/api/v1/tracks", params=window, headers=me)
    assert r.status_code == 200
    times = [datetime.fromisoformat(p["t"]) for p in r.json()]
    assert times == [base + timedelta(minutes=i) for i in range(10, 20)]  # from inclusive, to exclusive
    assert r.json()[0]["grid"] == grid_points[10][0] and set(r.json()[0]) == {
        "t",
        "lon",
        "lat",
        "accuracy_m",
        "grid",
    }
    limited = await tclient.get("/api/v1/tracks", params={**window, "limit": 3}, headers=me)
    assert [p["t"] for p in limited.json()] == [p["t"] for p in r.json()[:3]]
    named = await tclient.get("/api/v1/tracks", params={**window, "collector": "collector03"}, headers=me)
    assert named.json() == r.json()

    for reader in ("operator01", "supervisor01", "planner01"):
        theirs = await tclient.get(
            "/api/v1/tracks", params={**window, "collector": "collector03"}, headers=await login(reader)
        )
        assert theirs.status_code == 200 and theirs.json() == r.json()
    other = await tclient.get(
        "/api/v1/tracks", params={**window, "collector": "collector03"}, headers=await login("collector04")
    )
    assert other.status_code == 403 and other.json()["code"] == "forbidden"
    own_of_other = await tclient.get("/api/v1/tracks", params=window, headers=await login("collector04"))
    assert own_of_other.status_code == 200 and own_of_other.json() == []

    op = await login("operator01")
    assert (await tclient.get("/api/v1/tracks", params=window, headers=op)).status_code == 422
    nobody = await tclient.get("/api/v1/tracks", params={"collector": "operator02"}, headers=op)
    assert nobody.status_code == 404
    backwards = {"from": window["to"], "to": window["from"], "collector": "collector03"}
    assert (await tclient.get("/api/v1/tracks", params=backwards, headers=op)).status_code == 422
    naive = {"from": "2026-03-06T08:00:00", "collector": "collector03"}
    assert (await tclient.get("/api/v1/tracks", params=naive, headers=op)).status_code == 422

    unit = await tclient.get(
        "/api/v1/tracks", params={"collector": "collector03"}, headers=await login("unit-water")
    )
    assert unit.status_code == 403
    r = await tclient.post("/api/v1/tracks", content=b"{not json", headers=op)
    assert r.status_code == 403  # role before input
    r = await tclient.post("/api/v1/tracks", content=b"{not json")
    assert r.status_code == 401
    assert (await tclient.get("/api/v1/tracks")).status_code == 401
