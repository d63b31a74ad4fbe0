"""Settings of the command center: filing restricted to supervisors, closing on a passed check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from api.db import Database
from api.settings import Settings
from cases.lifecycle import ACTIONS, CASE_ACTIONS, REPORT_ACTIONS
from tests.conftest import PASSWORD, CloneDb, make_app
from tests.test_workflow import handle, report, result, spot, task_of  # noqa: F401


@pytest.fixture(scope="module")
async def own(clone_db: CloneDb, settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    db = Database(await clone_db(), pool_size=4)
    app = make_app(settings, db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, db
    await db.dispose()


async def _login(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_filing_restricted_and_auto_close(own, spot: dict) -> None:  # noqa: F811
    client, db = own

    async def login(who: str) -> dict[str, str]:
        return await _login(client, who)

    async with db.sessions() as session:
        await session.execute(
            text("UPDATE settings SET value = '[\"supervisor\"]' WHERE key = 'filing_roles'")
        )
        await session.execute(text("UPDATE settings SET value = 'true' WHERE key = 'auto_close_on_fixed'"))
        await session.commit()
    rid = await report(client, login, spot)
    r = await client.post(f"/api/v1/reports/{rid}/file", json={}, headers=await login("operator01"))
    assert r.status_code == 403
    r = await client.post(f"/api/v1/reports/{rid}/file", json={}, headers=await login("supervisor01"))
    assert r.status_code == 200
    number = r.json()["number"]
    case = (
        await client.post(f"/api/v1/cases/{number}/dispatch", json={}, headers=await login("operator01"))
    ).json()
    assert (await handle(client, login, case)).status_code == 200
    task = await task_of(client, login, "collector07", number=number)
    assert (await result(client, login, "collector07", task, "fixed")).status_code == 200
    closed = (await client.get(f"/api/v1/cases/{number}", headers=await login("operator01"))).json()
    assert closed["status"] == "closed"


@pytest.mark.parametrize("action", REPORT_ACTIONS + CASE_ACTIONS)
async def test_every_action_refuses_a_wrong_role(client: httpx.AsyncClient, login, action: str) -> None:
    """403 whatever the state: a role outside the lifecycle table is refused before anything else."""
    allowed = ACTIONS[action].roles | ({"supervisor"} if "operator" in ACTIONS[action].roles else set())
    wrong = next(
        u
        for u, r in (
            ("planner01", "planner"),
            ("collector01", "collector"),
            ("unit-water", "unit"),
            ("operator01", "operator"),
        )
        if r not in allowed
    )
    target = "reports/999999" if ACTIONS[action].on == "report" else "cases/HH2000-0000000"
    r = await client.post(f"/api/v1/{target}/{action}", json={}, headers=await login(wrong))
    assert r.status_code == 403, (action, wrong, r.text)
