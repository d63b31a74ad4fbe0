"""Collector tasks (核实 verify, 核查 check): listing and results, through the real ASGI app and PostGIS."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.copies import Copies
from api.db import Database
from api.routers import tasks as tasks_router
from cases import tasks
from geo.errors import Conflict, InvalidInput
from tests.conftest import Login, make_app
from tests.images import jpeg

CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
async def tclient(settings, db: Database, copies: Copies) -> AsyncIterator[httpx.AsyncClient]:
    """The application with the tasks router (until api/app.py includes it)."""
    app = make_app(settings, db)
    copies.attach(app)
    if not any(getattr(r, "path", "").startswith("/api/v1/tasks") for r in app.routes):
        app.include_router(tasks_router.router)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.10", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


@pytest.fixture(scope="module")
async def users(db: Database) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(text("SELECT username, id FROM users"))
        return {r.username: r.id for r in rows}


@pytest.fixture(scope="module")
async def beat_point(db: Database) -> tuple[float, float, str]:
    """A point well inside a grid of collector01's beat."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                text("""
            SELECT g.code, ST_X(ST_PointOnSurface(g.geom)) AS x, ST_Y(ST_PointOnSurface(g.geom)) AS y
            FROM beats b JOIN users u ON u.id = b.collector_id JOIN unit_grids g ON g.code = b.grid_code
            WHERE u.username = 'collector01' ORDER BY g.code LIMIT 1 OFFSET 5""")
            )
        ).one()
    return row.x, row.y, row.code.strip()


async def make_report(client: httpx.AsyncClient, login: Login, x: float, y: float) -> dict[str, Any]:
    """A real report of collector01 with one photo, through POST /api/v1/reports."""
    part = {
        "client_id": str(uuid.uuid4()),
        "kind": "event",
        "category": "06010",
        "description": "暴露垃圾",
        "location": {"lon": x, "lat": y, "crs": "wgs84", "accuracy_m": 5},
        "observed_at": datetime.now(CST).isoformat(),
    }
    r = await client.post(
        "/api/v1/reports",
        files=[
            ("report", (None, json.dumps(part, ensure_ascii=False), "application/json")),
            ("photos", ("r.jpg", jpeg(x, y, datetime.now(CST)), "image/jpeg")),
        ],
        headers=await login("collector01"),
    )
    assert r.status_code == 201, r.text
    return r.json()


async def make_case(db: Database, report_id: int, status: str = "handled") -> tuple[int, str]:
    """A minimal case filed from a report (the workflow is not ours to drive here)."""
    number = f"T{uuid.uuid4().hex[:12]}"
    async with db.sessions() as session:
        case_id = await session.scalar(
            text(
                "INSERT INTO cases (number, status, report_id, kind, category, description, grid_code, geom) "
                "SELECT :n, :s, id, kind, category, description, grid_code, geom FROM reports WHERE id = :r "
                "RETURNING id"
            ),
            {"n": number, "s": status, "r": report_id},
        )
        await session.execute(
            text("UPDATE reports SET case_id = :c, status = 'filed' WHERE id = :r"),
            {"c": case_id, "r": report_id},
        )
        await session.commit()
    return case_id, number


async def new_task(db: Database, kind: str, collector_id: int, due_in: timedelta, **target: int) -> int:
    async with db.sessions() as session:
        task_id = await tasks.create_task(session, kind, collector_id, datetime.now(CST) + due_in, **target)
        await session.commit()
    return task_id


def result_part(outcome: str, x: float, y: float, **extra: Any) -> dict[str, Any]:
    return {
        "client_id": str(uuid.uuid4()),
        "outcome": outcome,
        "note": "现场核实",
        "location": {"lon": x, "lat": y, "crs": "wgs84", "accuracy_m": 4},
        **extra,
    }


def files(part: dict | str | None, photos: list[bytes]) -> list:
    out = (
        []
        if part is None
        else [("result", (None, part if isinstance(part, str) else json.dumps(part), "application/json"))]
    )
    return out + [("photos", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]


async def task_state(db: Database, task_id: int) -> dict[str, Any]:
    async with db.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT t.status, t.outcome, t.note, t.done_at, ST_X(t.result_geom) AS lon, "
                    "ST_Y(t.result_geom) AS lat, (SELECT count(*) FROM photos p WHERE p.task_id = t.id) AS photos, "
                    "(SELECT array_agg(DISTINCT p.purpose) FROM photos p WHERE p.task_id = t.id) AS purposes "
                    "FROM collector_tasks t WHERE t.id = :id"
                ),
                {"id": task_id},
            )
        ).one()
    return row._asdict()


@pytest.fixture(scope="module")
async def report(tclient: httpx.AsyncClient, login: Login, beat_point) -> dict[str, Any]:
    return await make_report(tclient, login, beat_point[0], beat_point[1])


async def test_beat_owner_and_create_rules(db: Database, users: dict[str, int], beat_point, report) -> None:
    async with db.sessions() as session:
        assert await tasks.collector_for_grid(session, beat_point[2]) == users["collector01"]
        assert await tasks.collector_for_grid(session, "431202999999999") is None
        due = datetime.now(CST) + timedelta(hours=4)
        bad = [
            dict(kind="inspect", collector_id=users["collector01"], due_at=due, report_id=report["id"]),
            dict(kind="verify", collector_id=users["collector01"], due_at=due),  # no report
            dict(
                kind="check", collector_id=users["collector01"], due_at=due, report_id=report["id"]
            ),  # no case
            dict(
                kind="verify", collector_id=users["collector01"], due_at=due.replace(tzinfo=None), report_id=1
            ),
            dict(kind="verify", collector_id=users["operator01"], due_at=due, report_id=report["id"]),
        ]
        for args in bad:
            with pytest.raises(InvalidInput):
                await tasks.create_task(session, **args)
        with pytest.raises(ValueError):
            await tasks.cancel_tasks(session)


async def test_list_own_tasks_with_status_and_overdue(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point
) -> None:
    x, y, grid = beat_point
    rep = await make_report(tclient, login, x, y)
    handled = await make_report(tclient, login, x, y)
    case_id, number = await make_case(db, handled["id"])
    mine_verify = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=rep["id"])
    mine_check = await new_task(db, "check", users["collector01"], timedelta(hours=-1), case_id=case_id)
    theirs = await new_task(db, "verify", users["collector02"], timedelta(hours=2), report_id=rep["id"])
    me = await login("collector01")

    r = await tclient.get("/api/v1/tasks", params={"status": "open"}, headers=me)
    assert r.status_code == 200, r.text
    listed = {t["id"]: t for t in r.json()}
    assert mine_verify in listed and mine_check in listed and theirs not in listed
    assert all(t["status"] == "open" for t in r.json())
    dues = [datetime.fromisoformat(t["due_at"]) for t in r.json()]
    assert dues == sorted(dues)  # the most urgent first

    verify = listed[mine_verify]
    assert verify["kind"] == "verify" and verify["case"] is None and verify["overdue"] is False
    assert verify["report"]["id"] == rep["id"] and verify["report"]["grid"] == grid
    assert verify["report"]["category"] == "06010" and verify["report"]["description"] == "暴露垃圾"
    assert abs(verify["report"]["location"]["lon"] - x) < 1e-9
    assert [p["id"] for p in verify["report"]["photos"]] == [p["id"] for p in rep["photos"]]
    assert verify["result"] is None
    assert datetime.fromisoformat(verify["due_at"]) > datetime.now(CST)

    check = listed[mine_check]
    assert check["kind"] == "check" and check["overdue"] is True and check["report"] is None
    assert check["case"]["number"] == number and check["case"]["status"] == "handled"
    assert check["case"]["category"] == "06010" and abs(check["case"]["location"]["lat"] - y) < 1e-9
    assert [p["id"] for p in check["case"]["photos"]] == [p["id"] for p in handled["photos"]]

    async with db.sessions() as session:
        assert await tasks.cancel_tasks(session, report_id=rep["id"]) == 2  # both collectors' verify tasks
        await session.commit()
    open_now = await tclient.get("/api/v1/tasks", params={"status": "open"}, headers=me)
    assert mine_verify not in {t["id"] for t in open_now.json()}
    cancelled = await tclient.get("/api/v1/tasks", params={"status": "cancelled"}, headers=me)
    (gone,) = [t for t in cancelled.json() if t["id"] == mine_verify]
    assert gone["status"] == "cancelled" and gone["overdue"] is False
    every = {t["id"] for t in (await tclient.get("/api/v1/tasks", headers=me)).json()}
    assert {mine_verify, mine_check} <= every and theirs not in every
    theirs_list = await tclient.get("/api/v1/tasks", headers=await login("collector02"))
    assert {t["id"] for t in theirs_list.json()} >= {theirs} and mine_check not in {
        t["id"] for t in theirs_list.json()
    }
    bad = await tclient.get("/api/v1/tasks", params={"status": "closed"}, headers=me)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"


async def test_verify_confirmed_records_result_and_runs_hooks(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point, report
) -> None:
    x, y, _ = beat_point
    task_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    seen: list[tuple[dict, str]] = []

    async def hook(session, result: dict) -> None:
        # Inside the result's transaction: the task already reads as done.
        status = await session.scalar(
            text("SELECT status FROM collector_tasks WHERE id = :id"), {"id": result["id"]}
        )
        seen.append((result, status))

    tasks.ON_RESULT.append(hook)
    try:
        part = result_part("confirmed", x + 0.0001, y)
        r = await tclient.post(
            f"/api/v1/tasks/{task_id}/result",
            files=files(part, [jpeg(x, y, datetime.now(CST))]),
            headers=await login("collector01"),
        )
    finally:
        tasks.ON_RESULT.remove(hook)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == task_id and body["status"] == "done" and body["overdue"] is False
    assert body["result"]["outcome"] == "confirmed" and body["result"]["client_id"] == part["client_id"]
    assert body["result"]["note"] == "现场核实" and body["done_at"] is not None
    assert abs(body["result"]["location"]["lon"] - (x + 0.0001)) < 1e-9
    (photo,) = body["result"]["photos"]
    assert photo["purpose"] == "verify"
    assert body["report"]["photos"] == report["photos"]  # the result's photo is not the report's

    state = await task_state(db, task_id)
    assert state["status"] == "done" and state["outcome"] == "confirmed" and state["photos"] == 1
    assert state["purposes"] == ["verify"] and abs(state["lat"] - y) < 1e-9
    ((result, status_in_hook),) = seen
    assert status_in_hook == "done"
    assert result["id"] == task_id and result["kind"] == "verify" and result["report_id"] == report["id"]
    assert result["case_id"] is None and result["outcome"] == "confirmed"
    assert result["collector_id"] == users["collector01"] and result["photo_ids"] == [photo["id"]]

    again = await tclient.get(f"/api/v1/tasks/{task_id}", headers=await login("collector01"))
    assert again.status_code == 200 and again.json() == body
    shown = await tclient.get(photo["url"], headers=await login("collector01"))
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"


async def test_a_failing_hook_stores_nothing(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point, report, settings
) -> None:
    x, y, _ = beat_point
    task_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])

    async def refuse(session, result: dict) -> None:
        raise Conflict("the report moved on meanwhile")

    tasks.ON_RESULT.append(refuse)
    try:
        r = await tclient.post(
            f"/api/v1/tasks/{task_id}/result",
            files=files(result_part("confirmed", x, y), [jpeg(x, y)]),
            headers=await login("collector01"),
        )
    finally:
        tasks.ON_RESULT.remove(refuse)
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    state = await task_state(db, task_id)
    assert state["status"] == "open" and state["outcome"] is None and state["photos"] == 0
    assert list((settings.photo_dir / "tmp").glob("*.part")) == []


async def test_not_found_needs_no_photo_and_check_outcomes(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point, report
) -> None:
    x, y, _ = beat_point
    me = await login("collector01")
    verify = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    r = await tclient.post(
        f"/api/v1/tasks/{verify}/result",
        files=files(result_part("not_found", x, y, note=None), []),
        headers=me,
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"]["outcome"] == "not_found" and r.json()["result"]["photos"] == []
    assert r.json()["result"]["note"] == ""

    handled = await make_report(tclient, login, x, y)
    case_id, number = await make_case(db, handled["id"])
    fixed = await new_task(db, "check", users["collector01"], timedelta(hours=2), case_id=case_id)
    r = await tclient.post(
        f"/api/v1/tasks/{fixed}/result", files=files(result_part("fixed", x, y), [jpeg(x, y)]), headers=me
    )
    assert r.status_code == 200, r.text
    assert r.json()["case"]["number"] == number and r.json()["result"]["outcome"] == "fixed"
    assert [p["purpose"] for p in r.json()["result"]["photos"]] == ["check"]

    rework = await new_task(db, "check", users["collector01"], timedelta(hours=2), case_id=case_id)
    r = await tclient.post(
        f"/api/v1/tasks/{rework}/result", files=files(result_part("not_fixed", x, y), []), headers=me
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "photos"
    r = await tclient.post(
        f"/api/v1/tasks/{rework}/result",
        files=files(result_part("not_fixed", x, y), [jpeg(x, y), jpeg(x, y, color=(10, 20, 30))]),
        headers=me,
    )
    assert r.status_code == 200 and len(r.json()["result"]["photos"]) == 2
    assert (await task_state(db, rework))["photos"] == 2


async def test_bad_results_are_refused_and_store_nothing(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point, report, settings
) -> None:
    x, y, _ = beat_point
    me = await login("collector01")
    task_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    url = f"/api/v1/tasks/{task_id}/result"

    async def refused(part, photos, field: str) -> None:
        r = await tclient.post(url, files=files(part, photos), headers=me)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_input" and r.json()["errors"][0]["field"] == field

    await refused(result_part("confirmed", x, y), [], "photos")  # evidence required
    await refused(result_part("fixed", x, y), [jpeg(x, y)], "result.outcome")  # a check outcome
    await refused(result_part("maybe", x, y), [jpeg(x, y)], "result.outcome")
    await refused(result_part("confirmed", x, 127.5), [jpeg(x, y)], "result.location.lat")
    await refused(result_part("confirmed", x, y, client_id="short"), [jpeg(x, y)], "result.client_id")
    await refused("{not json", [jpeg(x, y)], "result")
    await refused(None, [jpeg(x, y)], "result")
    state = await task_state(db, task_id)
    assert state["status"] == "open" and state["photos"] == 0
    assert list((settings.photo_dir / "tmp").glob("*.part")) == []

    handled = await make_report(tclient, login, x, y)
    case_id, _ = await make_case(db, handled["id"])
    check = await new_task(db, "check", users["collector01"], timedelta(hours=2), case_id=case_id)
    r = await tclient.post(
        f"/api/v1/tasks/{check}/result", files=files(result_part("confirmed", x, y), [jpeg(x, y)]), headers=me
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "result.outcome"


async def test_replay_conflict_and_state(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point, report
) -> None:
    x, y, _ = beat_point
    me = await login("collector01")
    task_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    other_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    part, photo = result_part("confirmed", x, y), jpeg(x, y)

    first = await tclient.post(f"/api/v1/tasks/{task_id}/result", files=files(part, [photo]), headers=me)
    retry = await tclient.post(f"/api/v1/tasks/{task_id}/result", files=files(part, [photo]), headers=me)
    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert (await task_state(db, task_id))["photos"] == 1  # nothing stored twice

    changed = {**part, "note": "其实是另一回事"}
    r = await tclient.post(f"/api/v1/tasks/{task_id}/result", files=files(changed, [photo]), headers=me)
    assert r.status_code == 409 and r.json()["code"] == "client_id_conflict"
    r = await tclient.post(f"/api/v1/tasks/{other_id}/result", files=files(part, [photo]), headers=me)
    assert r.status_code == 409 and r.json()["code"] == "client_id_conflict"  # same id, other task
    assert (await task_state(db, other_id))["status"] == "open"

    r = await tclient.post(
        f"/api/v1/tasks/{task_id}/result", files=files(result_part("not_found", x, y), []), headers=me
    )
    assert r.status_code == 409
    assert r.json()["code"] == "invalid_transition" and r.json()["allowed_actions"] == []
    assert (await task_state(db, task_id))["outcome"] == "confirmed"

    async with db.sessions() as session:
        await session.execute(
            text("UPDATE collector_tasks SET status = 'cancelled' WHERE id = :id"), {"id": other_id}
        )
        await session.commit()
    r = await tclient.post(
        f"/api/v1/tasks/{other_id}/result", files=files(result_part("not_found", x, y), []), headers=me
    )
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    assert (await task_state(db, other_id))["status"] == "cancelled"


async def test_racing_results(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point, report
) -> None:
    x, y, _ = beat_point
    me = await login("collector01")
    task_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    part, photo = result_part("confirmed", x, y), jpeg(x, y)
    url = f"/api/v1/tasks/{task_id}/result"
    a, b = await asyncio.gather(
        tclient.post(url, files=files(part, [photo]), headers=me),
        tclient.post(url, files=files(part, [photo]), headers=me),
    )
    assert (a.status_code, b.status_code) == (200, 200) and a.json() == b.json()
    assert (await task_state(db, task_id))["photos"] == 1

    task_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    url = f"/api/v1/tasks/{task_id}/result"
    a, b = await asyncio.gather(
        tclient.post(url, files=files(result_part("not_found", x, y), []), headers=me),
        tclient.post(url, files=files(result_part("not_found", x, y), []), headers=me),
    )
    assert sorted([a.status_code, b.status_code]) == [200, 409]


async def test_visibility_roles_and_order_of_checks(
    tclient: httpx.AsyncClient, login: Login, db: Database, users, beat_point, report
) -> None:
    x, y, _ = beat_point
    task_id = await new_task(db, "verify", users["collector01"], timedelta(hours=2), report_id=report["id"])
    url = f"/api/v1/tasks/{task_id}/result"
    good = files(result_part("confirmed", x, y), [jpeg(x, y)])

    r = await tclient.post(url, files=good, headers=await login("collector02"))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await tclient.post(url, files=files("{not json", []), headers=await login("collector02"))
    assert r.status_code == 404  # visibility before input
    r = await tclient.post("/api/v1/tasks/987654321/result", files=good, headers=await login("collector01"))
    assert r.status_code == 404
    assert (
        await tclient.get(f"/api/v1/tasks/{task_id}", headers=await login("collector02"))
    ).status_code == 404
    staff = await tclient.get(f"/api/v1/tasks/{task_id}", headers=await login("operator01"))
    assert staff.status_code == 200 and staff.json()["id"] == task_id

    r = await tclient.post(url, files=files("{not json", []), headers=await login("operator01"))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"  # role before input
    assert (await tclient.get("/api/v1/tasks", headers=await login("operator01"))).status_code == 403
    assert (
        await tclient.get(f"/api/v1/tasks/{task_id}", headers=await login("unit-water"))
    ).status_code == 403
    r = await tclient.post(url, files=files("{not json", []))
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert (await tclient.get("/api/v1/tasks")).status_code == 401
    state = await task_state(db, task_id)
    assert state["status"] == "open" and state["photos"] == 0
