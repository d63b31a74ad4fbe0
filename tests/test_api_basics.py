"""First endpoints: health, sign-in, profile, catalogue and units, as problem details."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from api.db import Database
from tests.conftest import PASSWORD, Login, make_app


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["postgis"].startswith("3.")
    assert body["migration"] == "0001" or body["migration"] > "0001"
    assert body["in_memory_copies"] == "live"  # grid index, token principals, catalogue


async def test_healthz_503_when_database_is_down(app: FastAPI, settings) -> None:
    dead = make_app(settings, Database("postgresql+asyncpg://citygrid@127.0.0.1:9/none"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dead), base_url="http://t") as c:
        r = await c.get("/healthz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "database_unavailable"


async def test_login_and_wrong_password(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/token", data={"username": "operator01", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 43200
    assert body["roles"] == ["operator"] and len(body["access_token"]) > 30

    r = await client.post("/api/v1/auth/token", data={"username": "operator02", "password": "nope"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == "invalid_credentials" and problem["status"] == 401
    assert problem["type"].endswith("/invalid-credentials")

    r = await client.post("/api/v1/auth/token", data={"username": "nobody", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"


async def test_token_form_fields_are_validated(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/token", data={"username": "operator01"})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "invalid_input"
    assert {"field": "password", "message": "Field required"} in body["errors"]


async def test_me_of_a_collector_has_a_beat(client: httpx.AsyncClient, login: Login) -> None:
    r = await client.get("/api/v1/me", headers=await login("collector05"))
    assert r.status_code == 200
    me = r.json()
    assert me["username"] == "collector05" and me["roles"] == ["collector"]
    assert len(me["beat"]) > 20 and all(len(code) == 15 for code in me["beat"])


async def test_me_of_a_unit_user(client: httpx.AsyncClient, login: Login) -> None:
    me = (await client.get("/api/v1/me", headers=await login("unit-water"))).json()
    assert me["unit"] == {"code": "water", "name": "怀化市自来水有限公司"}
    assert "beat" not in me


async def test_me_needs_a_valid_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    r = await client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401


async def test_categories(client: httpx.AsyncClient, login: Login) -> None:
    r = await client.get("/api/v1/categories", headers=await login("collector01"))
    assert r.status_code == 200
    classes = {c["code"]: c for c in r.json()}
    assert len(classes) == 250
    cover = classes["01001"]
    assert cover["kind"] == "component" and cover["major"] == "市政公用设施异常"
    assert cover["name"] == "供水井盖异常" and cover["deadline_class"] == "urgent"
    assert classes["06010"]["deadline_class"] == "4wh"
    assert classes["09005"]["deadline_class"] == "1wd"
    assert classes["06001"]["deadline"] == {"name": "20工作日", "unit": "working_day", "amount": 20.0}
    events = (await client.get("/api/v1/categories?kind=event", headers=await login("collector01"))).json()
    assert events and all(c["kind"] == "event" for c in events)


async def test_units_for_staff_only(client: httpx.AsyncClient, login: Login) -> None:
    r = await client.get("/api/v1/units", headers=await login("operator01"))
    assert r.status_code == 200
    units = {u["code"]: u for u in r.json()}
    assert units["cgj-hc"]["parent"] == "cgj" and units["cgj-hc"]["dispatch_center"]
    assert units["water"]["kind"] == "water_supply"
    assert any(u["kind"] == "street_office" for u in units.values())
    assert any(u["kind"] == "property" for u in units.values())
    r = await client.get("/api/v1/units", headers=await login("collector01"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (await client.get("/api/v1/units")).status_code == 401


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
