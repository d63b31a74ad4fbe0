"""Collector beats (责任网格): moving grids, the summary, and balanced contiguous suggestions."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.db import Database
from api.routers import planning
from api.settings import Settings
from grids import balance, beats
from tests.conftest import PASSWORD, CloneDb, make_app

N = 8  # collectors for the JK suggestion

# Hot spots of reports in JK (lon, lat, peak reports a grid, radius m): the load is far from even.
HOT_SPOTS = ((110.005, 27.495, 30, 700), (110.03, 27.48, 15, 500))


@pytest.fixture(scope="module")
async def bdb(clone_db: CloneDb) -> AsyncIterator[Database]:
    """A throwaway clone with a year of synthetic reports (and some that must not count)."""
    database = Database(await clone_db(), pool_size=4)
    terms = " + ".join(
        f"{peak} * exp(-power(ST_Distance(p.pt, ST_Transform(ST_SetSRID(ST_MakePoint({lon}, {lat}), 4490), 4546))"
        f" / {radius}, 2))"
        for lon, lat, peak, radius in HOT_SPOTS
    )
    async with database.sessions() as session:
        await session.execute(
            text(f"""
            WITH hot AS (
                SELECT g.code, g.area_code, g.geom, floor({terms})::int AS n
                FROM unit_grids g CROSS JOIN LATERAL (SELECT ST_Transform(ST_PointOnSurface(g.geom), 4546) AS pt) p
                WHERE g.area_code = 'JK')
            INSERT INTO reports (source, kind, category, description, grid_code, area_code, received_at, geom)
            SELECT 'hotline', 'event', '06010', 'synthetic', h.code, h.area_code,
                   now() - make_interval(days => (i * 37) % 360), ST_PointOnSurface(h.geom)
            FROM hot h, generate_series(1, h.n) i""")
        )
        # Old reports and merged duplicates: they must not count.
        await session.execute(
            text("""
            INSERT INTO reports (source, kind, category, grid_code, area_code, received_at, status, geom)
            SELECT 'hotline', 'event', '06010', g.code, g.area_code, now() - make_interval(days => d), s,
                   ST_PointOnSurface(g.geom)
            FROM (SELECT * FROM unit_grids WHERE area_code = 'JK' ORDER BY code DESC LIMIT 1) g,
                 (VALUES (400, 'filed'), (500, 'filed'), (10, 'merged')) AS v(d, s)""")
        )
        await session.commit()
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def bclient(settings: Settings, bdb: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(settings, bdb)
    if not any(getattr(r, "path", "") == "/api/v1/beats" for r in app.routes):  # until app.py has it
        app.include_router(planning.router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.22", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


async def _headers(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def _jk(db: Database) -> dict[str, tuple[float, int, str]]:
    """JK grid code → (m², reports of the last year, current collector)."""
    async with db.sessions() as session:
        rows = await session.execute(
            text("""
            SELECT g.code, g.area_m2, u.username,
                   (SELECT count(*) FROM reports r WHERE r.grid_code = g.code AND r.status <> 'merged'
                      AND r.received_at >= now() - interval '365 days') AS n
            FROM unit_grids g LEFT JOIN beats b ON b.grid_code = g.code LEFT JOIN users u ON u.id = b.collector_id
            WHERE g.area_code = 'JK' ORDER BY g.code""")
        )
        return {r.code.strip(): (r.area_m2, r.n, r.username) for r in rows}


def _cv(grids: dict[str, tuple[float, int, str]], beat_of: dict[str, Any]) -> float:
    """Coefficient of variation of the per-beat weight, ½ area share + ½ load share (load = reports + 1)."""
    m2 = sum(a for a, _, _ in grids.values())
    load = sum(n + 1 for _, n, _ in grids.values())
    per: dict[Any, float] = defaultdict(float)
    for code, (a, n, _) in grids.items():
        per[beat_of[code]] += 0.5 * a / m2 + 0.5 * (n + 1) / load
    return statistics.pstdev(per.values()) / statistics.fmean(per.values())


async def test_load_of_grids(bdb: Database) -> None:
    grids = await _jk(bdb)
    async with bdb.sessions() as session:
        loads = await beats.load_of_grids(session, area_code="JK")
    assert set(loads) == set(grids)
    assert all(loads[c] == n + 1 for c, (_, n, _) in grids.items())
    assert loads[max(grids)] == 1.0  # only old and merged reports there
    assert min(loads.values()) == 1.0 and max(loads.values()) > 20


async def test_assign_and_summary(bclient: httpx.AsyncClient, bdb: Database) -> None:
    grids = await _jk(bdb)
    codes = sorted(grids)
    giver = grids[codes[0]][2]
    taker = next(u for _, _, u in (grids[c] for c in codes) if u != giver)
    moved = [c for c in codes if grids[c][2] == giver][:2]
    planner = await _headers(bclient, "planner01")

    r = await bclient.put(
        f"/api/v1/beats/{taker}", json={"grids": moved}, headers=await _headers(bclient, "operator01")
    )
    assert r.status_code == 403
    before = (await bclient.get("/api/v1/beats", headers=planner)).json()
    count = {c["username"]: c["grids"] for c in before["collectors"]}

    r = await bclient.put(f"/api/v1/beats/{taker}", json={"grids": moved}, headers=planner)
    assert r.status_code == 200, r.text
    assert r.json()["moved_from"] == {giver: 2} and r.json()["areas"] == ["JK"]
    after = (await bclient.get("/api/v1/beats", headers=planner)).json()
    now = {c["username"]: c for c in after["collectors"]}
    assert now[taker]["grids"] == count[taker] + 2 and now[giver]["grids"] == count[giver] - 2
    assert now[taker]["load"] == sum(grids[c][1] + 1 for c in codes if grids[c][2] == taker or c in moved)
    jk = after["balance"]["by_area"]["JK"]
    assert jk["grids"]["n"] == 16 and jk["load"]["max"] > 3 * jk["load"]["median"]  # the hot spots
    assert after["areas"]["JK"]["unassigned"] == 0

    r = await bclient.put(f"/api/v1/beats/{giver}", json={"grids": moved}, headers=planner)  # and back
    assert r.status_code == 200 and r.json()["moved_from"] == {taker: 2}
    r = await bclient.put(f"/api/v1/beats/{giver}", json={"grids": ["431202999999001"]}, headers=planner)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "431202999999001"
    r = await bclient.put("/api/v1/beats/operator01", json={"grids": moved}, headers=planner)
    assert r.status_code == 422 and "collector" in r.text
    r = await bclient.put("/api/v1/beats/nobody", json={"grids": moved}, headers=planner)
    assert r.status_code == 404


@pytest.fixture(scope="module")
async def suggestion(bclient: httpx.AsyncClient) -> dict[str, Any]:
    started = time.perf_counter()
    r = await bclient.post(
        "/api/v1/beats/suggest", json={"n": N, "area": "JK"}, headers=await _headers(bclient, "planner01")
    )
    assert r.status_code == 200, r.text
    print(f"suggestion for JK with {N} collectors: {time.perf_counter() - started:.1f} s")
    return r.json()


async def test_suggestion_is_contiguous_complete_and_balanced(
    suggestion: dict[str, Any], bdb: Database
) -> None:
    grids = await _jk(bdb)
    assignment = suggestion["assignment"]
    assert set(assignment) == set(grids)  # every JK grid once (a dict), and nothing of other areas
    assert set(assignment.values()) == set(range(N))
    assert all(b["area"] == "JK" and b["connected"] for b in suggestion["beats"])

    # Connected, independently: the union of each beat's grids is one polygon.
    async with bdb.sessions() as session:
        rows = await session.execute(
            text("""
            SELECT t.i, GeometryType(ST_Union(g.geom)) AS kind
            FROM unnest(CAST(:codes AS text[]), CAST(:idx AS int[])) AS t(c, i) JOIN unit_grids g ON g.code = t.c
            GROUP BY t.i"""),
            {"codes": list(assignment), "idx": list(assignment.values())},
        )
        kinds = {r.i: r.kind for r in rows}
    assert kinds == dict.fromkeys(range(N), "POLYGON")
    features = suggestion["geojson"]["features"]
    assert len(features) == N and all(f["geometry"]["type"] == "Polygon" for f in features)

    # Better balanced than the naive split (runs of equally many grids in code order), computed here.
    codes = sorted(grids)
    naive = {c: i * N // len(codes) for i, c in enumerate(codes)}
    suggested_cv, naive_cv = _cv(grids, assignment), _cv(grids, naive)
    current_cv = _cv(grids, {c: u for c, (_, _, u) in grids.items()})
    print(
        f"weight CV: current (16 beats) {current_cv:.4f}, naive {naive_cv:.4f}, suggested {suggested_cv:.4f}"
    )
    assert suggested_cv < naive_cv / 10 and suggested_cv < 0.02
    bal = suggestion["balance"]
    assert bal["suggested"]["weight"]["cv"] == pytest.approx(suggested_cv, abs=1e-4)
    assert bal["naive"]["weight"]["cv"] == pytest.approx(naive_cv, abs=1e-4)
    assert bal["current"]["weight"]["n"] == 16 and bal["suggested"]["weight"]["n"] == N
    for b in suggestion["beats"]:
        assert 0.97 < b["weight"] < 1.03


async def test_accept_writes_the_suggestion(
    bclient: httpx.AsyncClient, bdb: Database, suggestion: dict[str, Any]
) -> None:
    grids = await _jk(bdb)
    jk_collectors = sorted({u for _, _, u in grids.values()})
    proposed = {b["index"]: b["proposed_collector"] for b in suggestion["beats"]}
    assert sum(1 for u in proposed.values() if u) >= N - 1  # the holders of most of each beat today
    spare = iter(u for u in jk_collectors if u not in proposed.values())
    proposed = {i: u or next(spare) for i, u in proposed.items()}
    assert len(set(proposed.values())) == N
    planner = await _headers(bclient, "planner01")
    body = {"assignment": suggestion["assignment"], "collectors": proposed}

    r = await bclient.post("/api/v1/beats/accept", json=body, headers=await _headers(bclient, "operator01"))
    assert r.status_code == 403
    r = await bclient.post(
        "/api/v1/beats/accept", json={**body, "collectors": {**proposed, 1: proposed[0]}}, headers=planner
    )
    assert r.status_code == 422 and "one beat only" in r.text
    r = await bclient.post(
        "/api/v1/beats/accept",
        json={**body, "collectors": {i: u for i, u in proposed.items() if i}},
        headers=planner,
    )
    assert r.status_code == 422
    async with bdb.sessions() as session:
        hc = (await session.scalar(text("SELECT min(code) FROM unit_grids WHERE area_code = 'HC'"))).strip()
    r = await bclient.post(
        "/api/v1/beats/accept",
        json={**body, "assignment": {**suggestion["assignment"], hc: 0}},
        headers=planner,
    )
    assert r.status_code == 422 and "mixes" in r.text
    assert await _jk(bdb) == grids  # nothing written by the refused ones

    r = await bclient.post("/api/v1/beats/accept", json=body, headers=planner)
    assert r.status_code == 200, r.text
    assert r.json()["grids"] == len(grids)
    now = await _jk(bdb)
    assert all(now[c][2] == proposed[i] for c, i in suggestion["assignment"].items())
    summary = (await bclient.get("/api/v1/beats", headers=planner)).json()
    jk = summary["balance"]["by_area"]["JK"]["weight"]
    assert jk["n"] == N and jk["cv"] == pytest.approx(
        suggestion["balance"]["suggested"]["weight"]["cv"], abs=3e-4
    )
    assert set(summary["idle"]) == set(jk_collectors) - set(proposed.values())


async def test_allocation_over_areas(bdb: Database) -> None:
    assert balance.allocate(10, {"A": 5.0, "B": 3.0, "C": 0.1}) == {"A": 6, "B": 3, "C": 1}
    assert sum(balance.allocate(78, {"HC": 4.1, "GX": 3.2, "JK": 2.5, "ZF": 1.9}).values()) == 78
    with pytest.raises(Exception, match="cannot cover"):
        balance.allocate(3, {"HC": 1, "GX": 1, "JK": 1, "ZF": 1})
    async with bdb.sessions() as session:
        s = await balance.suggest(session, 12, weights={"area": 1, "load": 0})
        area_of = dict(
            (r.code.strip(), r.area_code)
            for r in await session.execute(text("SELECT code, area_code FROM unit_grids"))
        )
    assert set(s.assignment) == set(area_of)
    areas: dict[int, set[str]] = defaultdict(set)
    for code, i in s.assignment.items():
        areas[i].add(area_of[code])
    assert len(areas) == 12 and all(len(a) == 1 for a in areas.values())
    assert all(b["connected"] for b in s.beats)
    assert s.weights == {"area": 1.0, "load": 0.0}
    assert s.balance["suggested"]["weight"]["cv"] < 0.02  # within each area; areas differ by rounding
