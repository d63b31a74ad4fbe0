"""The calendar API: a year's holidays and make-up working days, and the deadline check.

Runs on its own clone of the seeded database: the entries it saves would otherwise shift
the deadlines other tests compute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import text

from api.db import Database
from api.routers import calendar as calendar_router
from tests.conftest import PASSWORD, CloneDb, make_app
from tests.test_deadlines import first_unknown_year, first_weekday

CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
async def cal_db(clone_db: CloneDb) -> AsyncIterator[Database]:
    database = Database(await clone_db(), pool_size=2)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def cal(settings, cal_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The application with the calendar router (until api/app.py includes it)."""
    app = make_app(settings, cal_db)
    if not any(getattr(r, "path", "").startswith("/api/v1/calendar") for r in app.routes):
        app.include_router(calendar_router.router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.11", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


@pytest.fixture(scope="module")
async def auth(cal: httpx.AsyncClient):
    tokens: dict[str, str] = {}

    async def headers(username: str) -> dict[str, str]:
        if username not in tokens:
            r = await cal.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[username] = r.json()["access_token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    return headers


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def deadline(cal: httpx.AsyncClient, headers: dict[str, str], **params: str) -> httpx.Response:
    return await cal.get("/api/v1/calendar/deadline", params=params, headers=headers)


async def test_known_year(cal, auth) -> None:
    for user in ("planner01", "unit-water"):
        r = await cal.get("/api/v1/calendar/2025", headers=await auth(user))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["year"] == 2025
        assert body["known_to_package"] is True
        assert body["provisional"] is False
        assert body["entered"] == []
        october = [h for h in body["holidays"] if h["day"].startswith("2025-10")]
        assert [h["day"] for h in october] == [f"2025-10-0{d}" for d in (1, 2, 3, 6, 7, 8)]
        assert october[0]["name"] == "国庆节"
        made_up = [w["day"] for w in body["workdays"] if w["day"][5:7] in ("09", "10")]
        assert made_up == ["2025-09-28", "2025-10-11"]


async def test_put_then_get_an_unknown_year(cal, auth) -> None:
    year = first_unknown_year()
    monday = first_weekday(year, 3, 0)
    wednesday, saturday = monday + timedelta(days=2), monday + timedelta(days=5)
    new_year = date(year, 1, 1)
    body = {
        "holidays": [{"day": str(new_year), "name": "元旦"}, {"day": str(wednesday), "name": "测试假日"}],
        "workdays": [{"day": str(saturday), "name": "调休"}],
    }
    r = await cal.put(f"/api/v1/calendar/{year}", json=body, headers=await auth("admin"))
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["known_to_package"] is False
    assert saved["provisional"] is True
    expected_holidays = [new_year] if new_year.weekday() < 5 else []
    assert [h["day"] for h in saved["holidays"]] == [str(d) for d in [*expected_holidays, wednesday]]
    assert saved["workdays"] == [{"day": str(saturday), "name": "调休"}]
    assert saved["entered"] == [
        {"day": str(new_year), "kind": "holiday", "name": "元旦"},
        {"day": str(wednesday), "kind": "holiday", "name": "测试假日"},
        {"day": str(saturday), "kind": "workday", "name": "调休"},
    ]
    r = await cal.get(f"/api/v1/calendar/{year}", headers=await auth("operator01"))
    assert r.status_code == 200
    assert r.json() == saved

    # Monday 10:00 + 5 工作日: Tue, Thu, Fri, Sat (调休), Mon
    start = datetime.combine(monday, datetime.min.time(), CST).replace(hour=10)
    r = await deadline(cal, await auth("operator01"), start=start.isoformat(), **{"class": "5wd"})
    assert r.status_code == 200, r.text
    assert instant(r.json()["deadline_at"]) == start + timedelta(days=7)
    assert r.json()["provisional"] is True

    # a PUT replaces the year's entries: without the make-up Saturday, Tuesday
    body["workdays"] = []
    r = await cal.put(f"/api/v1/calendar/{year}", json=body, headers=await auth("admin"))
    assert r.status_code == 200
    assert [e["day"] for e in r.json()["entered"]] == [str(new_year), str(wednesday)]
    r = await deadline(cal, await auth("operator01"), start=start.isoformat(), **{"class": "5wd"})
    assert instant(r.json()["deadline_at"]) == start + timedelta(days=8)


async def test_put_refusals(cal, auth) -> None:
    year = first_unknown_year()
    url = f"/api/v1/calendar/{year}"
    before = (await cal.get(url, headers=await auth("admin"))).json()

    r = await cal.put(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = await cal.put(url, json={"holidays": []}, headers=await auth("operator01"))
    assert r.status_code == 403
    admin = await auth("admin")
    outside = {"holidays": [{"day": f"{year + 1}-01-01", "name": "元旦"}]}
    r = await cal.put(url, json=outside, headers=admin)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "holidays.0.day"
    both = {"holidays": [{"day": f"{year}-05-04"}], "workdays": [{"day": f"{year}-05-04"}]}
    r = await cal.put(url, json=both, headers=admin)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "workdays.0.day"
    twice = {"holidays": [{"day": f"{year}-05-04"}, {"day": f"{year}-05-04"}]}
    assert (await cal.put(url, json=twice, headers=admin)).status_code == 422
    assert (await cal.put(url, json={"days": []}, headers=admin)).status_code == 422
    assert (await cal.put("/api/v1/calendar/1999", json={}, headers=admin)).status_code == 422
    assert (await cal.get(url)).status_code == 401
    assert (await cal.get(url, headers=await auth("collector01"))).status_code == 403

    assert (await cal.get(url, headers=admin)).json() == before


async def test_deadline_endpoint(cal, auth, cal_db: Database) -> None:
    operator = await auth("operator01")
    r = await deadline(cal, operator, start="2025-09-30T17:00:00+08:00", **{"class": "1wd"})
    assert r.status_code == 200, r.text
    assert r.json() == {"deadline_at": "2025-10-09T17:00:00+08:00", "provisional": False}
    r = await deadline(cal, operator, start="2025-09-30T17:00", **{"class": "4wh"})  # naive: Beijing
    assert instant(r.json()["deadline_at"]) == datetime(2025, 10, 9, 11, 30, tzinfo=CST)
    r = await deadline(cal, operator, start="2025-09-30T09:00:00Z", **{"class": "urgent"})
    assert instant(r.json()["deadline_at"]) == datetime(2025, 9, 30, 19, tzinfo=CST)
    r = await deadline(cal, operator, start="2025-09-30T09:00:00+08:00", **{"class": "stage_dispatch"})
    assert instant(r.json()["deadline_at"]) == datetime(2025, 9, 30, 9, 30, tzinfo=CST)

    # a unit working 08:00–17:00 without a lunch break
    async with cal_db.sessions() as session:
        await session.execute(
            text("UPDATE units SET working_hours = CAST(:h AS jsonb) WHERE code = 'water'"),
            {"h": '{"periods": [["08:00", "17:00"]]}'},
        )
        await session.commit()
    r = await deadline(cal, operator, start="2025-06-09T16:00:00+08:00", unit="water", **{"class": "4wh"})
    assert instant(r.json()["deadline_at"]) == datetime(2025, 6, 10, 11, tzinfo=CST)
    r = await deadline(cal, operator, start="2025-06-09T16:00:00+08:00", unit="gas", **{"class": "4wh"})
    assert instant(r.json()["deadline_at"]) == datetime(2025, 6, 10, 10, 30, tzinfo=CST)  # default hours

    r = await deadline(cal, operator, **{"class": "1wd"})  # from now
    assert r.status_code == 200
    assert instant(r.json()["deadline_at"]) > datetime.now(CST)

    r = await deadline(cal, operator, start="2025-09-30T17:00", **{"class": "3wd"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "class"
    r = await deadline(cal, operator, start="2025-09-30T17:00", unit="nobody", **{"class": "1wd"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "unit"
    assert (await deadline(cal, operator, start="yesterday", **{"class": "1wd"})).status_code == 422
    assert (await deadline(cal, {}, **{"class": "1wd"})).status_code == 401
    assert (await deadline(cal, await auth("collector01"), **{"class": "1wd"})).status_code == 403


async def test_known_year_correction(cal, auth) -> None:
    admin = await auth("admin")
    correction = {"holidays": [{"day": "2025-10-09", "name": "测试更正"}]}
    r = await cal.put("/api/v1/calendar/2025", json=correction, headers=admin)
    assert r.status_code == 200, r.text
    try:
        assert {"day": "2025-10-09", "name": "测试更正"} in r.json()["holidays"]
        assert r.json()["provisional"] is False
        r = await deadline(cal, admin, start="2025-09-30T17:00:00+08:00", **{"class": "1wd"})
        assert r.json() == {"deadline_at": "2025-10-10T17:00:00+08:00", "provisional": False}
    finally:
        await cal.put("/api/v1/calendar/2025", json={}, headers=admin)
