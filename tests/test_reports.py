"""The collectors' report submission (API.md), through the real ASGI app and PostGIS."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from PIL import Image
from sqlalchemy import text

from api.db import Database
from geo import crs
from tests.conftest import Login
from tests.images import jpeg, oversized

CST = timezone(timedelta(hours=8))
M_PER_DEG_LAT = 110_900.0


def report_part(lon: float, lat: float, **extra) -> dict:
    return {
        "client_id": str(uuid.uuid4()),
        "kind": "event",
        "category": "06010",
        "description": "暴露垃圾，堆放在人行道上",
        "location": {"lon": lon, "lat": lat, "crs": "wgs84", "accuracy_m": 6.5},
        "observed_at": datetime.now(CST).isoformat(),
        **extra,
    }


def files(part: dict, photos: list[bytes]) -> list:
    return [("report", (None, json.dumps(part, ensure_ascii=False), "application/json"))] + [
        ("photos", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)
    ]


@pytest.fixture(scope="module")
async def beat_point(db: Database) -> tuple[float, float, str]:
    """A point well inside a grid of collector01's beat."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                text("""
            SELECT g.code, ST_X(ST_PointOnSurface(g.geom)) AS x, ST_Y(ST_PointOnSurface(g.geom)) AS y
            FROM beats b JOIN users u ON u.id = b.collector_id JOIN unit_grids g ON g.code = b.grid_code
            WHERE u.username = 'collector01' ORDER BY g.code LIMIT 1 OFFSET 3""")
            )
        ).one()
    return row.x, row.y, row.code.strip()


async def count_reports(db: Database) -> int:
    async with db.sessions() as session:
        return await session.scalar(text("SELECT count(*) FROM reports"))


async def test_submit_and_read(client: httpx.AsyncClient, login: Login, beat_point) -> None:
    x, y, grid = beat_point
    part = report_part(x, y)
    r = await client.post(
        "/api/v1/reports",
        files=files(part, [jpeg(x, y, datetime.now(CST))]),
        headers=await login("collector01"),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/api/v1/reports/{body['id']}"
    assert body["status"] == "received" and body["client_id"] == part["client_id"]
    assert body["grid"] == grid and body["community"]["code"] == grid[:12]
    assert body["street"]["code"] == grid[:9] and body["county"] == {"code": "431202", "name": "鹤城区"}
    assert body["district"] in ("鹤城区", "经开区")
    assert body["flags"] == [] and body["case"] is None
    assert len(body["photos"]) == 1 and len(body["photos"][0]["sha256"]) == 64
    assert abs(body["location"]["lon"] - x) < 1e-9
    again = await client.get(f"/api/v1/reports/{body['id']}", headers=await login("collector01"))
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    place = again.json()["place"]  # written on first read, kept from then on
    assert f"网格 {grid}" in place and place.startswith(body["district"])


async def test_retry_is_idempotent_and_reuse_conflicts(
    client: httpx.AsyncClient, login: Login, db: Database, beat_point
) -> None:
    x, y, _ = beat_point
    headers = await login("collector01")
    part, photo = report_part(x, y), jpeg(x, y)
    first = await client.post("/api/v1/reports", files=files(part, [photo]), headers=headers)
    before = await count_reports(db)
    retry = await client.post("/api/v1/reports", files=files(part, [photo]), headers=headers)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    assert await count_reports(db) == before
    other = {**part, "description": "另一件事"}
    conflict = await client.post("/api/v1/reports", files=files(other, [photo]), headers=headers)
    assert conflict.status_code == 409 and conflict.json()["code"] == "client_id_conflict"
    # Another collector may use the same client_id: idempotency is per collector.
    theirs = await client.post(
        "/api/v1/reports", files=files(part, [photo]), headers=await login("collector02")
    )
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


async def test_racing_duplicates_make_one_report(
    client: httpx.AsyncClient, login: Login, db: Database, beat_point
) -> None:
    x, y, _ = beat_point
    headers = await login("collector01")
    part, photo = report_part(x, y), jpeg(x, y)
    before = await count_reports(db)
    a, b = await asyncio.gather(
        client.post("/api/v1/reports", files=files(part, [photo]), headers=headers),
        client.post("/api/v1/reports", files=files(part, [photo]), headers=headers),
    )
    assert sorted([a.status_code, b.status_code]) == [200, 201]
    assert a.json()["id"] == b.json()["id"]
    assert await count_reports(db) == before + 1


@pytest.mark.parametrize("system", ["wgs84", "cgcs2000", "gcj02", "bd09"])
async def test_every_coordinate_system(
    client: httpx.AsyncClient, login: Login, beat_point, system: str
) -> None:
    x, y, grid = beat_point
    lon, lat = crs.from_cgcs2000(x, y, system)
    part = report_part(lon, lat)
    part["location"]["crs"] = system
    r = await client.post(
        "/api/v1/reports", files=files(part, [jpeg(x, y)]), headers=await login("collector01")
    )
    assert r.status_code == 201, r.text
    assert r.json()["grid"] == grid
    assert crs.distance_m(r.json()["location"]["lon"], r.json()["location"]["lat"], x, y) < 0.01
    assert "photo_far_from_location" not in r.json()["flags"]


def stored_objects(settings) -> set[str]:
    return {p.name for p in (settings.photo_dir / "objects").rglob("*") if p.is_file()}


async def test_outside_jurisdiction_stores_nothing(
    client: httpx.AsyncClient, login: Login, db: Database, settings
) -> None:
    before, objects = await count_reports(db), stored_objects(settings)
    r = await client.post(
        "/api/v1/reports",
        files=files(report_part(116.39, 39.91), [jpeg(116.39, 39.91)]),
        headers=await login("collector01"),
    )
    assert r.status_code == 422 and r.json()["code"] == "outside_jurisdiction"
    assert await count_reports(db) == before
    assert list((settings.photo_dir / "tmp").glob("*.part")) == []
    assert stored_objects(settings) == objects  # the photo was valid, yet not kept


async def test_bad_inputs(
    client: httpx.AsyncClient, login: Login, db: Database, beat_point, settings
) -> None:
    x, y, _ = beat_point
    headers = await login("collector01")
    before, objects = await count_reports(db), stored_objects(settings)

    async def post(part, photos, **kw) -> httpx.Response:
        return await client.post("/api/v1/reports", files=files(part, photos), headers=headers, **kw)

    r = await post(report_part(x, y), [b"this is not an image at all"])
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    gif = io.BytesIO()
    Image.new("RGB", (20, 20)).save(gif, "GIF")
    assert (await post(report_part(x, y), [gif.getvalue()])).status_code == 415
    assert (await post(report_part(x, y), [jpeg(x, y)[:2000]])).status_code == 415  # truncated
    r = await post(report_part(x, y), [])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "photos"
    r = await post(report_part(x, y), [jpeg(x, y)] * 10)
    assert r.status_code == 413
    r = await post(report_part(x, y), [oversized(10 * 1024 * 1024 + 1)])
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    r = await post(report_part(x, y, category="01001"), [jpeg(x, y)])  # an event kind with a component class
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "kind"
    bad = report_part(x, y)
    bad["location"]["lat"] = 127.5
    r = await post(bad, [jpeg(x, y)])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "report.location.lat"
    r = await client.post(
        "/api/v1/reports",
        files=[
            ("report", (None, "{not json", "application/json")),
            ("photos", ("a.jpg", jpeg(x, y), "image/jpeg")),
        ],
        headers=headers,
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    r = await client.post("/api/v1/reports", json=report_part(x, y), headers=headers)
    assert r.status_code == 415
    r = await client.post(
        "/api/v1/reports", files=files(report_part(x, y), [jpeg(x, y)]), headers=await login("operator01")
    )
    assert r.status_code == 403
    assert await count_reports(db) == before
    assert list((settings.photo_dir / "tmp").glob("*.part")) == []
    assert stored_objects(settings) == objects


async def test_flags(client: httpx.AsyncClient, login: Login, db: Database, beat_point) -> None:
    x, y, _ = beat_point
    headers = await login("collector01")
    now = datetime.now(CST)

    async def flags_of(part: dict, photos: list[bytes], who: str = "collector01") -> list[str]:
        r = await client.post("/api/v1/reports", files=files(part, photos), headers=await login(who))
        assert r.status_code == 201, r.text
        return r.json()["flags"]

    assert await flags_of(report_part(x, y), [jpeg(x + 0.003, y, now)]) == ["photo_far_from_location"]
    assert await flags_of(report_part(x, y), [jpeg(x, y, now - timedelta(days=3))]) == ["photo_old"]
    inaccurate = report_part(x, y)
    inaccurate["location"]["accuracy_m"] = 80
    assert await flags_of(inaccurate, [jpeg(x, y)]) == ["location_inaccurate"]
    assert await flags_of(report_part(x, y), [jpeg(x, y)], who="collector40") == ["outside_beat"]
    reused = jpeg(x, y)
    assert await flags_of(report_part(x, y), [reused]) == []
    assert await flags_of(report_part(x, y), [reused]) == ["photo_reused"]
    # Added by the insert itself: the report's first event carries the same flags.
    async with db.sessions() as session:
        payload = await session.scalar(
            text(
                "SELECT e.payload FROM case_events e JOIN reports r ON r.id = e.report_id "
                "WHERE e.action = 'report' ORDER BY r.id DESC LIMIT 1"
            )
        )
    assert payload["flags"] == ["photo_reused"]
    del headers


async def test_component_snap_and_mismatch(client: httpx.AsyncClient, login: Login, db: Database) -> None:
    async with db.sessions() as session:
        cover = (
            await session.execute(
                text("""
            SELECT c.code, ST_X(c.geom) AS x, ST_Y(c.geom) AS y FROM components c
            WHERE c.class_code = '01001' AND NOT EXISTS (SELECT 1 FROM components o WHERE o.class_code = '01001'
              AND o.code <> c.code AND ST_DWithin(o.geom::geography, c.geom::geography, 40))
            ORDER BY c.code LIMIT 1""")
            )
        ).one()
        gas = await session.scalar(text("SELECT code FROM components WHERE class_code = '01011' LIMIT 1"))
    headers = await login("collector01")
    part = report_part(cover.x + 4 / 98_800, cover.y, kind="component", category="01001")
    r = await client.post("/api/v1/reports", files=files(part, [jpeg(cover.x, cover.y)]), headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["component_code"] == cover.code and "component_mismatch" not in r.json()["flags"]
    wrong = report_part(cover.x, cover.y, kind="component", category="01001", component_code=gas)
    r = await client.post("/api/v1/reports", files=files(wrong, [jpeg(cover.x, cover.y)]), headers=headers)
    assert "component_mismatch" in r.json()["flags"]


async def test_snapped_to_grid(client: httpx.AsyncClient, login: Login, db: Database) -> None:
    async with db.sessions() as session:
        top = await session.scalar(
            text(
                "SELECT ST_YMax(ST_Intersection(geom, ST_SetSRID(ST_MakeLine(ST_MakePoint(110.0, 27.4), "
                "ST_MakePoint(110.0, 27.8)), 4490))) FROM management_areas WHERE code = 'HC'"
            )
        )
    y = top + 25 / M_PER_DEG_LAT
    r = await client.post(
        "/api/v1/reports",
        files=files(report_part(110.0, y), [jpeg(110.0, y)]),
        headers=await login("collector01"),
    )
    assert r.status_code == 201
    assert "snapped_to_grid" in r.json()["flags"] and 23 < r.json()["snapped_m"] < 27


async def test_visibility_and_sync(client: httpx.AsyncClient, login: Login, beat_point) -> None:
    x, y, _ = beat_point
    since = datetime.now(UTC).isoformat()
    mine = (
        await client.post(
            "/api/v1/reports",
            files=files(report_part(x, y), [jpeg(x, y)]),
            headers=await login("collector03"),
        )
    ).json()
    assert (
        await client.get(f"/api/v1/reports/{mine['id']}", headers=await login("collector04"))
    ).status_code == 404
    assert (
        await client.get(f"/api/v1/reports/{mine['id']}", headers=await login("operator02"))
    ).status_code == 200
    assert (
        await client.get(f"/api/v1/reports/{mine['id']}", headers=await login("unit-water"))
    ).status_code == 404
    synced = (
        await client.get("/api/v1/reports", params={"since": since}, headers=await login("collector03"))
    ).json()
    assert [r["id"] for r in synced] == [mine["id"]]
    others = (
        await client.get("/api/v1/reports", params={"since": since}, headers=await login("collector04"))
    ).json()
    assert mine["id"] not in [r["id"] for r in others]


async def test_hotline_intake(client: httpx.AsyncClient, login: Login, beat_point) -> None:
    x, y, grid = beat_point
    part = report_part(x, y, source="hotline", caller={"name": "李小明", "phone": "13812345678"})
    del part["client_id"]
    r = await client.post("/api/v1/reports/intake", json=part, headers=await login("operator03"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["source"] == "hotline" and body["grid"] == grid
    assert body["caller"] == {"name": "李小明", "phone": "13812345678"}
    planner = (await client.get(f"/api/v1/reports/{body['id']}", headers=await login("planner01"))).json()
    assert planner["caller"] == {"name": "李**", "phone": "138****5678"}
    far = report_part(116.39, 39.91, source="public")
    del far["client_id"]
    r = await client.post("/api/v1/reports/intake", json=far, headers=await login("supervisor01"))
    assert r.status_code == 201 and r.json()["flags"] == ["outside_grids"] and r.json()["grid"] is None
    r = await client.post("/api/v1/reports/intake", json=far, headers=await login("collector01"))
    assert r.status_code == 403


async def test_photos_are_served_rotated_stripped_and_cached(
    client: httpx.AsyncClient, login: Login, beat_point
) -> None:
    x, y, _ = beat_point
    original = jpeg(x, y, datetime.now(CST), size=(400, 200), orientation=6)
    report = (
        await client.post(
            "/api/v1/reports", files=files(report_part(x, y), [original]), headers=await login("collector05")
        )
    ).json()
    photo = report["photos"][0]
    headers = await login("collector05")
    r = await client.get(photo["url"], headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "immutable" in r.headers["cache-control"] and r.headers["etag"]
    served = Image.open(io.BytesIO(r.content))
    assert served.size == (200, 400)  # rotated by its EXIF orientation
    assert not served.getexif() and "exif" not in served.info
    r304 = await client.get(photo["url"], headers={**headers, "If-None-Match": r.headers["etag"]})
    assert r304.status_code == 304
    thumb = Image.open(io.BytesIO((await client.get(photo["thumbnail_url"], headers=headers)).content))
    assert max(thumb.size) <= 320 and thumb.size[1] > thumb.size[0]
    evidence = await client.get(photo["url"] + "/original", headers=await login("operator01"))
    assert evidence.content == original
    assert (await client.get(photo["url"] + "/original", headers=headers)).status_code == 403
    assert (await client.get(photo["url"], headers=await login("collector06"))).status_code == 404
    assert (await client.get(photo["url"], headers=await login("planner01"))).status_code == 200


async def test_hotline_intake_by_address(client: httpx.AsyncClient, login: Login) -> None:
    headers = await login("operator05")
    found = (
        await client.get("/api/v1/geocode/intake-candidates", params={"q": "迎丰中路"}, headers=headers)
    ).json()
    assert found, "the operator gets candidates as they type"
    chosen = found[0]
    part = {
        "kind": "event",
        "category": "06010",
        "description": "市民来电：路边垃圾",
        "source": "hotline",
        "place": chosen["ref"],
        "caller": {"name": "王芳", "phone": "13900001111"},
    }
    r = await client.post("/api/v1/reports/intake", json=part, headers=headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["address"] == chosen["name"] and body["grid"]
    assert abs(body["location"]["lon"] - chosen["location"]["lon"]) < 1e-6
    r = await client.post("/api/v1/reports/intake", json={**part, "place": None}, headers=headers)
    assert r.status_code == 422
