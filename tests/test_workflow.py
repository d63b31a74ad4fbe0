"""The case workflow over HTTP: every row of lifecycle.md, refusals, races, queues, duplicates."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import text

from api.db import Database
from tests.conftest import Login
from tests.images import jpeg

CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
async def spot(db: Database) -> dict:
    """A point inside a grid of collector07's beat in 鹤城区, with its street."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                text("""
            SELECT g.code, ST_X(ST_PointOnSurface(g.geom)) AS x, ST_Y(ST_PointOnSurface(g.geom)) AS y
            FROM beats b JOIN users u ON u.id = b.collector_id JOIN unit_grids g ON g.code = b.grid_code
            WHERE u.username = 'collector07' ORDER BY g.code LIMIT 1 OFFSET 5""")
            )
        ).one()
    return {"grid": row.code.strip(), "x": row.x, "y": row.y, "street": row.code[:9], "area": None}


async def report(
    client: httpx.AsyncClient,
    login: Login,
    spot: dict,
    category: str = "06010",
    kind: str = "event",
    who: str = "collector07",
    dx: float = 0.0,
) -> int:
    part = {
        "client_id": str(uuid.uuid4()),
        "kind": kind,
        "category": category,
        "description": "测试案卷",
        "location": {"lon": spot["x"] + dx, "lat": spot["y"], "crs": "cgcs2000"},
        "observed_at": datetime.now(CST).isoformat(),
    }
    files = [
        ("report", (None, json.dumps(part), "application/json")),
        ("photos", ("a.jpg", jpeg(spot["x"], spot["y"]), "image/jpeg")),
    ]
    r = await client.post("/api/v1/reports", files=files, headers=await login(who))
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def post(
    client: httpx.AsyncClient, login: Login, who: str, path: str, body: dict | None = None
) -> httpx.Response:
    return await client.post(f"/api/v1{path}", json=body, headers=await login(who))


async def filed(client: httpx.AsyncClient, login: Login, spot: dict, **kw) -> dict:
    rid = await report(client, login, spot, **kw)
    r = await post(client, login, "operator01", f"/reports/{rid}/file", {})
    assert r.status_code == 200, r.text
    return r.json()


async def dispatched(client: httpx.AsyncClient, login: Login, spot: dict, **kw) -> dict:
    case = await filed(client, login, spot, **kw)
    r = await post(client, login, "operator01", f"/cases/{case['number']}/dispatch", {})
    assert r.status_code == 200, r.text
    return r.json()


def unit_user(case: dict) -> str:
    return f"unit-{case['unit']['code']}"


async def handle(
    client: httpx.AsyncClient, login: Login, case: dict, who: str | None = None
) -> httpx.Response:
    files = [
        ("action", (None, json.dumps({"note": "已清理完毕"}), "application/json")),
        ("photos", ("after.jpg", jpeg(case["location"]["lon"], case["location"]["lat"]), "image/jpeg")),
    ]
    return await client.post(
        f"/api/v1/cases/{case['number']}/handle", files=files, headers=await login(who or unit_user(case))
    )


async def task_of(
    client: httpx.AsyncClient, login: Login, who: str, number: str | None = None, report_id: int | None = None
) -> dict:
    tasks = (await client.get("/api/v1/tasks", params={"status": "open"}, headers=await login(who))).json()
    for t in tasks:
        if (number and t["case"] and t["case"]["number"] == number) or (
            report_id and t.get("report") and t["report"]["id"] == report_id
        ):
            return t
    raise AssertionError(f"no open task for {number or report_id} among {tasks}")


async def result(
    client: httpx.AsyncClient, login: Login, who: str, task: dict, outcome: str, photos: bool = True
) -> httpx.Response:
    body = {
        "client_id": str(uuid.uuid4()),
        "outcome": outcome,
        "note": "现场查看",
        "location": {"lon": 110.0, "lat": 27.55, "crs": "wgs84"},
    }
    files = [("result", (None, json.dumps(body), "application/json"))]
    if photos:
        files.append(("photos", ("c.jpg", jpeg(110.0, 27.55), "image/jpeg")))
    return await client.post(f"/api/v1/tasks/{task['id']}/result", files=files, headers=await login(who))


async def test_end_to_end_closed_loop(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    rid = await report(client, login, spot)
    case = (await post(client, login, "operator02", f"/reports/{rid}/file", {})).json()
    number = case["number"]
    assert case["status"] == "filed" and case["report_ids"] == [rid] and case["grid"] == spot["grid"]
    assert case["collector"] == "collector07" and case["light"] == "green" and case["deadline_at"]
    assert spot["grid"] in case["place"]  # the place text an operator reads on the phone
    assert number.startswith("HH20") and len(number.split("-")[1]) == 7
    assert (await client.get(f"/api/v1/reports/{rid}", headers=await login("collector07"))).json()[
        "case"
    ] == {"number": number, "status": "filed"}

    suggestion = (
        await client.get(f"/api/v1/cases/{number}/dispatch-suggestion", headers=await login("operator02"))
    ).json()
    assert suggestion["unit_code"] and suggestion["trace"]
    case = (await post(client, login, "operator02", f"/cases/{number}/dispatch", {})).json()
    assert case["status"] == "dispatched" and case["unit"]["code"] == suggestion["unit_code"]
    assert case["unit"]["code"].startswith("hw-")  # exposed garbage goes to the area's sanitation unit
    unit = unit_user(case)

    case = (await post(client, login, unit, f"/cases/{number}/sign", {})).json()
    assert case["signed_at"] and case["status"] == "dispatched"
    r = await handle(client, login, case)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "handled"

    task = await task_of(client, login, "collector07", number=number)
    assert task["kind"] == "check"
    r = await result(client, login, "collector07", task, "fixed")
    assert r.status_code == 200, r.text
    case = (await client.get(f"/api/v1/cases/{number}", headers=await login("supervisor01"))).json()
    assert case["status"] == "checked" and "close" in case["actions"]
    case = (await post(client, login, "supervisor01", f"/cases/{number}/close", {})).json()
    assert case["status"] == "closed" and case["closed_at"] and case["light"] is None

    events = (await client.get(f"/api/v1/cases/{number}/history", headers=await login("operator01"))).json()
    assert [e["action"] for e in events] == [
        "report",
        "file",
        "dispatch",
        "sign",
        "handle",
        "check_result",
        "close",
    ]
    assert events[2]["payload"]["rule"]["trace"] and events[2]["actor"] == "operator02"
    assert events[4]["role"] == "unit" and events[5]["actor"] == "collector07"
    assert [e["to"] for e in events] == [
        "received",
        "filed",
        "dispatched",
        "dispatched",
        "handled",
        "checked",
        "closed",
    ]


async def test_reject_merge_and_verification(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    rid = await report(client, login, spot, category="09005")
    r = await post(client, login, "operator01", f"/reports/{rid}/reject", {"reason": "out_of_scope"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = await post(client, login, "operator01", f"/reports/{rid}/reject", {"reason": "out_of_scope"})
    assert r.status_code == 409 and r.json()["allowed_actions"] == []
    assert (
        await post(client, login, "operator01", f"/reports/{rid}/reject", {"reason": "nope"})
    ).status_code == 422

    case = await filed(client, login, spot, category="09005")
    rid2 = await report(client, login, spot, category="09005", who="collector08")
    dup = (await client.get(f"/api/v1/reports/{rid2}/duplicates", headers=await login("operator01"))).json()
    assert case["number"] in [d["number"] for d in dup]
    merged = (
        await post(client, login, "operator01", f"/reports/{rid2}/merge", {"case": case["number"]})
    ).json()
    assert merged["number"] == case["number"] and set(merged["report_ids"]) >= {rid2}

    rid3 = await report(client, login, spot, category="06036")
    r = await post(client, login, "operator03", f"/reports/{rid3}/request_verification", {})
    assert r.status_code == 200 and r.json()["status"] == "verifying"
    task = await task_of(client, login, "collector07", report_id=rid3)
    assert task["kind"] == "verify"
    assert (await result(client, login, "collector07", task, "confirmed")).status_code == 200
    back = (await client.get(f"/api/v1/reports/{rid3}", headers=await login("operator03"))).json()
    assert back["status"] == "received" and "verified" in back["flags"]
    intake = (await client.get("/api/v1/intake", headers=await login("operator03"))).json()
    assert any(item["id"] == rid3 and item["verified"] for item in intake)

    rid4 = await report(client, login, spot, category="06036")
    await post(client, login, "operator03", f"/reports/{rid4}/request_verification", {})
    task = await task_of(client, login, "collector07", report_id=rid4)
    assert (await result(client, login, "collector07", task, "not_found", photos=False)).status_code == 200
    gone = (await client.get(f"/api/v1/reports/{rid4}", headers=await login("operator03"))).json()
    assert gone["status"] == "rejected" and gone["reject_reason"] == "not_found_on_site"


async def test_self_handle(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    rid = await report(client, login, spot, category="07001")
    files = [
        ("action", (None, json.dumps({"note": "已自行清除小广告"}), "application/json")),
        ("photos", ("after.jpg", jpeg(spot["x"], spot["y"]), "image/jpeg")),
    ]
    r = await client.post(
        f"/api/v1/reports/{rid}/self_handle", files=files, headers=await login("collector08")
    )
    assert r.status_code == 404  # not their report
    r = await client.post(
        f"/api/v1/reports/{rid}/self_handle", files=files, headers=await login("collector07")
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closed"


async def test_return_and_redispatch(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    case = await dispatched(client, login, spot)
    unit = unit_user(case)
    assert (await post(client, login, unit, f"/cases/{case['number']}/return", {})).status_code == 422
    r = await post(
        client, login, unit, f"/cases/{case['number']}/return", {"reason": "not_our_responsibility"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "returned" and r.json()["return_count"] == 1
    assert (await client.get(f"/api/v1/cases/{case['number']}", headers=await login(unit))).status_code == 404
    r = await post(client, login, "operator01", f"/cases/{case['number']}/dispatch", {"unit": "cgj-hc"})
    assert r.status_code == 200 and r.json()["unit"]["code"] == "cgj-hc"


async def test_extensions(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    case = await dispatched(client, login, spot, category="06011")  # 2 working days
    unit = unit_user(case)
    r = await post(
        client,
        login,
        unit,
        f"/cases/{case['number']}/request_extension",
        {"amount": 2, "unit": "working_day", "reason": "需协调渣土车辆"},
    )
    assert r.status_code == 200 and r.json()["extension"]["amount"] == 2
    assert (
        await post(client, login, unit, f"/cases/{case['number']}/approve_extension", {})
    ).status_code == 403
    r = await post(client, login, "supervisor02", f"/cases/{case['number']}/approve_extension", {})
    assert r.status_code == 200
    extended = r.json()
    assert extended["deadline_at"] > case["deadline_at"] and "extended" in extended["flags"]
    assert extended["extension"] is None
    r = await post(client, login, "supervisor02", f"/cases/{case['number']}/deny_extension", {})
    assert r.status_code == 409 and "request_extension" in r.json()["allowed_actions"]
    await post(
        client, login, unit, f"/cases/{case['number']}/request_extension", {"amount": 1, "reason": "再延"}
    )
    r = await post(client, login, "supervisor02", f"/cases/{case['number']}/deny_extension", {})
    assert r.status_code == 200 and r.json()["deadline_at"] == extended["deadline_at"]


async def test_suspend_and_resume_keep_the_time_left(
    client: httpx.AsyncClient, login: Login, spot: dict
) -> None:
    case = await dispatched(client, login, spot, category="06011")
    r = await post(
        client, login, "supervisor01", f"/cases/{case['number']}/suspend", {"reason": "需拆迁后处理"}
    )
    assert r.status_code == 200
    suspended = r.json()
    assert (
        suspended["status"] == "suspended" and suspended["deadline_at"] is None and suspended["light"] is None
    )
    assert suspended["time_left_s"] > 0
    resumed = (await post(client, login, "supervisor01", f"/cases/{case['number']}/resume", {})).json()
    assert resumed["status"] == "dispatched" and resumed["deadline_at"]
    assert abs(
        datetime.fromisoformat(resumed["deadline_at"]) - datetime.fromisoformat(case["deadline_at"])
    ) < timedelta(minutes=5)


async def test_rework_and_cancel(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    case = await dispatched(client, login, spot)
    await handle(client, login, case)
    task = await task_of(client, login, "collector07", number=case["number"])
    assert (await result(client, login, "collector07", task, "not_fixed")).status_code == 200
    again = (await client.get(f"/api/v1/cases/{case['number']}", headers=await login("operator01"))).json()
    assert again["status"] == "dispatched" and again["rework_count"] == 1 and again["unit"] == case["unit"]
    await handle(client, login, again)
    r = await post(client, login, "supervisor03", f"/cases/{case['number']}/cancel", {"reason": "重复立案"})
    assert r.status_code == 409  # handled cases cannot be cancelled
    case2 = await dispatched(client, login, spot)
    r = await post(
        client, login, "supervisor03", f"/cases/{case2['number']}/escalate", {"note": "请加快处置"}
    )
    assert r.status_code == 200 and r.json()["escalated"]
    r = await post(client, login, "supervisor03", f"/cases/{case2['number']}/cancel", {"reason": "重复立案"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


async def test_refusals_role_before_state(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    case = await dispatched(client, login, spot)
    number = case["number"]
    r = await post(client, login, "supervisor01", f"/cases/{number}/close", {})
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    assert set(r.json()["allowed_actions"]) == {
        "sign",
        "subdispatch",
        "return",
        "request_extension",
        "suspend",
        "handle",
        "cancel",
        "escalate",
    }
    assert (await post(client, login, "collector07", f"/cases/{number}/close", {})).status_code == 403
    assert (await post(client, login, "operator01", f"/cases/{number}/close", {})).status_code == 403
    assert (await post(client, login, "unit-power", f"/cases/{number}/sign", {})).status_code in (404,)
    assert (await post(client, login, "operator01", f"/cases/{number}/sign", {})).status_code == 403
    r = await post(client, login, "operator01", f"/cases/{number}/dispatch", {"version": 1})
    assert r.status_code == 409
    r = await client.post(f"/api/v1/cases/{number}/dispatch", json={})
    assert r.status_code == 401


async def test_racing_actions_one_wins(client: httpx.AsyncClient, login: Login, spot: dict) -> None:
    case = await filed(client, login, spot)
    headers = await login("operator04")
    a, b = await asyncio.gather(
        client.post(f"/api/v1/cases/{case['number']}/dispatch", json={}, headers=headers),
        client.post(f"/api/v1/cases/{case['number']}/dispatch", json={"unit": "cgj-hc"}, headers=headers),
    )
    assert sorted([a.status_code, b.status_code]) == [200, 409]
    stale = await post(
        client,
        login,
        "operator04",
        f"/cases/{case['number']}/escalate",
        {"note": "x", "version": case["version"]},
    )
    assert stale.status_code in (403, 409)


async def test_queues(client: httpx.AsyncClient, login: Login, spot: dict, db: Database) -> None:
    case = await dispatched(client, login, spot)
    unit = unit_user(case)
    mine = (await client.get("/api/v1/cases", params={"limit": 500}, headers=await login(unit))).json()
    assert mine["items"] and all(c["unit"]["code"] == case["unit"]["code"] for c in mine["items"])
    async with db.sessions() as session:
        await session.execute(
            text(
                "UPDATE cases SET deadline_at = now() - interval '1 hour', yellow_at = now() - interval '2 hours' "
                "WHERE number = :n"
            ),
            {"n": case["number"]},
        )
        await session.commit()
    headers = await login("supervisor01")
    overdue = (
        await client.get("/api/v1/cases", params={"overdue": "true", "limit": 500}, headers=headers)
    ).json()
    assert case["number"] in [c["number"] for c in overdue["items"]]
    assert all(c["light"] == "red" for c in overdue["items"])
    red = (
        await client.get("/api/v1/cases", params={"light": "red", "street": spot["street"]}, headers=headers)
    ).json()
    assert case["number"] in [c["number"] for c in red["items"]]
    page1 = (await client.get("/api/v1/cases", params={"limit": 2}, headers=headers)).json()
    page2 = (
        await client.get("/api/v1/cases", params={"limit": 2, "after": page1["next"]}, headers=headers)
    ).json()
    assert page1["next"] and not {c["number"] for c in page1["items"]} & {c["number"] for c in page2["items"]}
    by_class = (await client.get("/api/v1/cases", params={"class": "06"}, headers=headers)).json()
    assert all(c["category"].startswith("06") for c in by_class["items"])
    assert (await client.get("/api/v1/cases", headers=await login("collector07"))).status_code == 403
