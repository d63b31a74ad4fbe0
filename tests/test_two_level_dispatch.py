"""二级派遣: a district bureau (dispatch center) hands a case down to one of its child units."""

from __future__ import annotations

from datetime import datetime

import httpx

from tests.conftest import Login
from tests.test_workflow import filed, post, spot  # noqa: F401  (the spot fixture)


async def test_two_level_dispatch(client: httpx.AsyncClient, login: Login, spot: dict) -> None:  # noqa: F811
    case = await filed(client, login, spot, category="09005")
    number = case["number"]
    parent = (await post(client, login, "operator01", f"/cases/{number}/dispatch", {"unit": "cgj-hc"})).json()
    assert parent["unit"]["code"] == "cgj-hc"
    street_office = f"jd-{spot['street']}"

    assert (
        await post(client, login, "unit-cgj-hc", f"/cases/{number}/subdispatch", {"unit": "water"})
    ).status_code == 422
    r = await post(client, login, "unit-cgj-hc", f"/cases/{number}/subdispatch", {"unit": street_office})
    assert r.status_code == 200, r.text
    child = r.json()
    assert child["unit"]["code"] == street_office and child["status"] == "dispatched"
    assert datetime.fromisoformat(child["deadline_at"]) <= datetime.fromisoformat(parent["deadline_at"])

    # Both levels see the case; the child acts on it.
    assert (
        await client.get(f"/api/v1/cases/{number}", headers=await login("unit-cgj-hc"))
    ).status_code == 200
    assert (
        await post(client, login, f"unit-{street_office}", f"/cases/{number}/sign", {})
    ).status_code == 200
    # A unit that is not a dispatch center cannot hand down.
    r = await post(client, login, f"unit-{street_office}", f"/cases/{number}/subdispatch", {"unit": "hw-hc"})
    assert r.status_code == 403

    back = await post(
        client, login, f"unit-{street_office}", f"/cases/{number}/return", {"reason": "wrong_location"}
    )
    assert back.status_code == 200, back.text
    assert back.json()["unit"]["code"] == "cgj-hc" and back.json()["status"] == "dispatched"
    assert back.json()["deadline_at"] == parent["deadline_at"]

    events = (await client.get(f"/api/v1/cases/{number}/history", headers=await login("supervisor01"))).json()
    levels = [
        (e["action"], e["payload"].get("unit"), e["role"])
        for e in events
        if e["action"] in ("dispatch", "subdispatch", "return")
    ]
    assert levels == [
        ("dispatch", "cgj-hc", "operator"),
        ("subdispatch", street_office, "unit"),
        ("return", street_office, "unit"),
    ]
