"""Versioned dispatch rule sets over HTTP: YAML round trip, validation, history, activation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import text

from api.db import Database
from api.routers import dispatch_rules
from api.settings import Settings
from cases.demo_rules import demo_rules
from cases.rule_sets import dump_document, parse_document, read_document
from geo.errors import InvalidInput
from tests.conftest import PASSWORD, CloneDb, Login, make_app
from tests.test_workflow import dispatched, spot, unit_user  # noqa: F401  (the spot fixture)

YAML = {"Content-Type": "application/yaml"}


def with_router(app: FastAPI) -> FastAPI:
    """The app with the dispatch rules router, unless api/app.py includes it already."""
    if not any(getattr(r, "path", "").startswith(dispatch_rules.router.prefix) for r in app.routes):
        app.include_router(dispatch_rules.router)
    return app


@pytest.fixture(scope="module")
async def rules_db(clone_db: CloneDb) -> AsyncIterator[Database]:
    """A throwaway clone: these tests change the active rule set."""
    database = Database(await clone_db(), pool_size=4)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def rc(settings: Settings, rules_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = with_router(make_app(settings, rules_db))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.10", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:
        yield c


@pytest.fixture(scope="module")
async def as_(rc: httpx.AsyncClient) -> Login:
    tokens: dict[str, str] = {}

    async def headers(username: str) -> dict[str, str]:
        if username not in tokens:
            r = await rc.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[username] = r.json()["access_token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    return headers


async def export(rc: httpx.AsyncClient, as_: Login, version: int | None = None) -> str:
    params = {"version": version} if version else {}
    r = await rc.get("/api/v1/dispatch-rules/export", params=params, headers=await as_("planner01"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/yaml")
    return r.text


def body_of(exported: str) -> str:
    """The rules part of an export: without the comment header and the version line."""
    return "\n".join(
        line for line in exported.splitlines() if not line.startswith("#") and not line.startswith("version:")
    )


async def put(
    rc: httpx.AsyncClient, as_: Login, body: str | bytes, who: str = "admin", headers: dict | None = None
) -> httpx.Response:
    return await rc.put(
        "/api/v1/dispatch-rules", content=body, headers={**(headers or YAML), **await as_(who)}
    )


async def test_yaml_round_trip_history_and_activation(
    rc: httpx.AsyncClient,
    as_: Login,
    rules_db: Database,
    spot: dict,  # noqa: F811
) -> None:
    first = await export(rc, as_)
    assert first.startswith("# 派遣规则 dispatch rules, version 1 (active)")
    assert "match: {classes: ['01001']}" in first  # codes quoted, conditions on one line
    document = read_document(first)
    demo = sorted(demo_rules(), key=lambda r: r.position)
    n = len(demo)
    assert document.version == 1 and [r.name for r in document.rules] == [r.name for r in demo]
    assert [(r.match, r.unit_code, r.target) for r in document.rules] == [
        (r.match, r.unit_code, r.target) for r in demo
    ]
    assert [r.position for r in document.rules[:3]] == [10, 20, 30]
    assert document.lines and document.lines[0] == first.splitlines().index("rules:") + 2

    r = await put(rc, as_, first.replace(f"note: {document.note}", "note: 原样导入"))
    assert r.status_code == 201, r.text
    assert r.json() == {"version": 2, "active": True, "rules": n, "warnings": []}
    second = await export(rc, as_)
    assert second.startswith("# 派遣规则 dispatch rules, version 2 (active)")
    assert "created" in second.splitlines()[1] and "by admin" in second.splitlines()[1]
    assert body_of(second) == body_of(first).replace(f"note: {document.note}", "note: 原样导入")

    current = (await rc.get("/api/v1/dispatch-rules", headers=await as_("operator01"))).json()
    assert (current["version"], current["note"], current["active"]) == (2, "原样导入", True)
    assert current["activated_at"] and len(current["rules"]) == n
    old = (await rc.get("/api/v1/dispatch-rules/versions/1", headers=await as_("operator01"))).json()
    assert old["active"] is False and [x["name"] for x in old["rules"]] == [
        x["name"] for x in current["rules"]
    ]
    assert not {x["id"] for x in old["rules"]} & {x["id"] for x in current["rules"]}  # new rows
    water = next(x for x in current["rules"] if x["name"] == "供水井盖 → 自来水公司")
    assert water == {
        "id": water["id"],
        "position": water["position"],
        "name": "供水井盖 → 自来水公司",
        "match": {"classes": ["01001"]},
        "unit": "water",
        "deadline_class": None,
        "priority": 1,
        "enabled": True,
    }

    history = (await rc.get("/api/v1/dispatch-rules/versions", headers=await as_("supervisor01"))).json()
    assert [(h["version"], h["active"], h["created_by"], h["rules"]) for h in history] == [
        (2, True, "admin", n),
        (1, False, None, n),
    ]
    assert history[0]["created_at"] and history[0]["activated_at"] and history[0]["note"] == "原样导入"

    # A case dispatched now is routed by version 2, and says so.
    case = await dispatched(rc, as_, spot)
    trace = await dispatch_trace(rules_db, case["number"])
    assert trace["rule_set"] == 2 and trace["rule_id"] in {x["id"] for x in current["rules"]}
    # The unit hands it back (回退): the rule's record shows it, read from the real events.
    r = await rc.post(
        f"/api/v1/cases/{case['number']}/return",
        json={"reason": "wrong_location"},
        headers=await as_(unit_user(case)),
    )
    assert r.status_code == 200, r.text
    record = (
        await rc.get("/api/v1/dispatch-rules/quality", params={"version": 2}, headers=await as_("planner01"))
    ).json()
    assert [
        (x["rule_id"], x["routed"], x["returned"], x["returns_by_reason"]["wrong_location"])
        for x in record["rules"]
    ] == [(trace["rule_id"], 1, 1, 1)]

    r = await rc.post("/api/v1/dispatch-rules/versions/1/activate", headers=await as_("admin"))
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["active"], r.json()["warnings"]) == (1, True, [])
    assert (await rc.get("/api/v1/dispatch-rules", headers=await as_("operator01"))).json()["version"] == 1
    history = (await rc.get("/api/v1/dispatch-rules/versions", headers=await as_("admin"))).json()
    assert [(h["version"], h["active"]) for h in history] == [(2, False), (1, True)]
    assert history[1]["activated_at"] > history[0]["activated_at"]
    case = await dispatched(rc, as_, spot)
    trace = await dispatch_trace(rules_db, case["number"])
    assert trace["rule_set"] == 1 and trace["rule_id"] in {x["id"] for x in old["rules"]}
    async with rules_db.sessions() as session:
        assert (
            await session.scalar(text("SELECT rule_set FROM cases WHERE number = :n"), {"n": case["number"]})
        ) == 1
    # Replayed under either version, both real cases would go where they went.
    today = {"from": "2000-01-01T00:00:00+08:00", "to": "2100-01-01T00:00:00+08:00"}
    for version in (1, 2):
        r = await rc.post(
            "/api/v1/dispatch-rules/simulate", json={"rules": version, **today}, headers=await as_("admin")
        )
        assert (r.json()["cases"], r.json()["changed"], r.json()["by_hand"]) == (2, 0, 0), r.text
    # Activating the active version again changes nothing; an unknown one is a 404.
    assert (await rc.post("/api/v1/dispatch-rules/versions/1/activate", headers=await as_("admin"))).json()[
        "activated_at"
    ] == history[1]["activated_at"]
    r = await rc.post("/api/v1/dispatch-rules/versions/99/activate", headers=await as_("admin"))
    assert r.status_code == 404
    assert (await rc.get("/api/v1/dispatch-rules/versions/99", headers=await as_("admin"))).status_code == 404
    assert (
        await rc.get("/api/v1/dispatch-rules/export?version=2", headers=await as_("admin"))
    ).text.startswith("# 派遣规则 dispatch rules, version 2 (not active)")


async def dispatch_trace(database: Database, number: str) -> dict[str, Any]:
    async with database.sessions() as session:
        payload = await session.scalar(
            text(
                "SELECT e.payload FROM case_events e JOIN cases c ON c.id = e.case_id "
                "WHERE c.number = :n AND e.action = 'dispatch' ORDER BY e.id LIMIT 1"
            ),
            {"n": number},
        )
    return payload["rule"]


async def test_json_body_and_a_staged_version(rc: httpx.AsyncClient, as_: Login) -> None:
    current = (await rc.get("/api/v1/dispatch-rules", headers=await as_("admin"))).json()
    current["note"] = "JSON 导入，未启用"
    current["rules"][0]["enabled"] = False
    r = await rc.put(
        "/api/v1/dispatch-rules?activate=false",
        content=json.dumps(current, ensure_ascii=False),
        headers={"Content-Type": "application/json; charset=utf-8", **await as_("admin")},
    )
    assert r.status_code == 201, r.text
    staged = r.json()["version"]
    assert r.json()["active"] is False
    after = (await rc.get("/api/v1/dispatch-rules", headers=await as_("admin"))).json()
    assert after["version"] == current["version"]  # still the active one
    one = (await rc.get(f"/api/v1/dispatch-rules/versions/{staged}", headers=await as_("admin"))).json()
    assert one["active"] is False and one["activated_at"] is None and one["note"] == "JSON 导入，未启用"
    assert one["rules"][0]["enabled"] is False and one["rules"][1]["enabled"] is True


def problems(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input"
    return r.json()["errors"]


async def test_validation_errors_name_the_rule(rc: httpx.AsyncClient, as_: Login) -> None:
    before = (await rc.get("/api/v1/dispatch-rules/versions", headers=await as_("admin"))).json()
    good = {
        "note": "测试",
        "rules": [
            {
                "name": "供水井盖 → 自来水公司",
                "match": {"classes": ["01001"]},
                "unit": "water",
                "priority": 1,
            },
            {"name": "经开区垃圾", "match": {"areas": ["JK"], "majors": ["06"]}, "unit": "hw-jk"},
            {"name": "城中街道摊贩", "match": {"streets": ["431202001"]}, "unit": "jd-431202001"},
            {"name": "兜底", "match": {}, "target": "street_office"},
        ],
    }
    text_of = dump_document(parse_document(good), "测试")

    def edited(i: int, **changes: Any) -> str:
        doc = json.loads(json.dumps(good))
        doc["rules"][i].update(changes)
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)

    errors = problems(await put(rc, as_, edited(0, unit="nosuchunit")))
    assert errors == [
        {
            "field": "rules[0].unit",
            "message": "unknown unit 'nosuchunit'",
            "rule": "供水井盖 → 自来水公司",
            "line": 3,
        }
    ]
    errors = problems(await put(rc, as_, edited(0, match={"classes": ["01001", "99999"]})))
    assert [(e["field"], e["message"], e["rule"]) for e in errors] == [
        ("rules[0].match.classes", "unknown matter class '99999'", "供水井盖 → 自来水公司")
    ]
    errors = problems(await put(rc, as_, edited(2, match={"streets": ["431299999"]})))
    assert [(e["field"], e["message"], e["rule"]) for e in errors] == [
        ("rules[2].match.streets", "unknown street '431299999'", "城中街道摊贩")
    ]
    errors = problems(await put(rc, as_, edited(1, match={"areas": ["XX"]}, deadline_class="9zz")))
    assert {(e["field"], e["message"]) for e in errors} == {
        ("rules[1].match.areas", "unknown management area 'XX'"),
        ("rules[1].deadline_class", "unknown deadline class '9zz'"),
    }
    errors = problems(await put(rc, as_, edited(3, target="mayor", priority=9)))
    assert {e["field"] for e in errors} == {"rules[3].target", "rules[3].priority"}
    errors = problems(await put(rc, as_, edited(1, match={"class": ["06010"]})))
    assert errors[0]["field"] == "rules[1].match" and "unknown condition 'class'" in errors[0]["message"]
    errors = problems(await put(rc, as_, edited(2, untis="water")))
    assert errors[0]["field"] == "rules[2].untis" and errors[0]["rule"] == "城中街道摊贩"
    errors = problems(await put(rc, as_, edited(0, unit="water", target="street_office")))
    assert errors[0]["field"] == "rules[0]" and "not both" in errors[0]["message"]

    # Syntax: the line is named.
    broken = text_of.replace("match: {classes: ['01001']}", "match: {classes: ['01001']")
    r = await put(rc, as_, broken)
    errors = problems(r)
    assert errors[0]["field"] == "body" and errors[0]["message"].startswith("line ")
    assert "line" in r.json()["detail"]
    # Shapes.
    assert problems(await put(rc, as_, "just a sentence"))[0]["field"] == "body"
    assert problems(await put(rc, as_, "rules: 5\n"))[0]["field"] == "rules"
    assert problems(await put(rc, as_, "rules: []\n"))[0]["field"] == "rules"
    errors = problems(await put(rc, as_, "- name: a\n  unit: water\n- just text\n"))
    assert errors == [{"field": "rules[1]", "message": "a rule is a mapping, not text", "line": 3}]
    errors = problems(await put(rc, as_, "rules:\n  - match: {}\n    unit: water\n    priority: high\n"))
    assert {e["field"] for e in errors} == {"rules[0].name", "rules[0].priority"}
    errors = problems(await put(rc, as_, "rules:\n  - {name: a, unit: water, unit: gas}\n"))
    assert errors[0]["field"] == "rules[0].unit" and "twice" in errors[0]["message"]
    r = await put(rc, as_, "base: &b {name: a, unit: water}\nrules: [*b, *b]\n")
    assert problems(r)[0]["message"].endswith("alias not allowed")
    errors = problems(await put(rc, as_, "[1, 2", headers={"Content-Type": "application/json"}))
    assert errors[0]["field"] == "body" and errors[0]["line"] == 1

    # Nothing was stored by any refused document.
    after = (await rc.get("/api/v1/dispatch-rules/versions", headers=await as_("admin"))).json()
    assert after == before
    # The good one is stored; unquoted codes are read as written, not as numbers.
    r = await put(rc, as_, text_of.replace("['01001']", "[01001]"))
    assert r.status_code == 201 and r.json()["warnings"] == []
    stored = (await rc.get("/api/v1/dispatch-rules", headers=await as_("admin"))).json()
    assert stored["rules"][0]["match"] == {"classes": ["01001"]}


async def test_roles_media_types_and_size(rc: httpx.AsyncClient, as_: Login) -> None:
    body = "rules:\n  - {name: 兜底, match: {}, target: street_office}\n"
    assert (await put(rc, as_, body, who="operator01")).status_code == 403
    assert (await put(rc, as_, body, who="planner01")).status_code == 403
    assert (await rc.put("/api/v1/dispatch-rules", content=body, headers=YAML)).status_code == 401
    assert (await rc.get("/api/v1/dispatch-rules", headers=await as_("collector07"))).status_code == 403
    assert (
        await rc.get("/api/v1/dispatch-rules/versions", headers=await as_("unit-water"))
    ).status_code == 403
    r = await rc.post("/api/v1/dispatch-rules/versions/1/activate", headers=await as_("supervisor01"))
    assert r.status_code == 403
    r = await put(rc, as_, body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = await put(rc, as_, "# " + "x" * (1024 * 1024) + "\n" + body)
    assert r.status_code == 413
    r = await put(rc, as_, body, headers={"Content-Type": "text/yaml; charset=utf-8"})
    assert r.status_code == 201 and r.json()["warnings"] == []
    r = await put(rc, as_, "rules:\n  - {name: 供水, match: {classes: ['01001']}, unit: water}\n")
    assert r.status_code == 201
    assert r.json()["warnings"] == [
        "the last enabled rule is not a catch-all (match: {}): cases no rule takes need a unit by hand"
    ]


def test_parse_document_offline() -> None:
    rules = parse_document(
        "note: n\nrules:\n  - name: a\n    match:\n    target: street_office\n"
        "  - name: b\n    match: {kind: component, majors: [04]}\n    unit: garden\n    enabled: false\n"
    )
    assert [(r.name, r.match, r.unit_code, r.target, r.position, r.priority, r.enabled) for r in rules] == [
        ("a", {}, None, "street_office", 10, 3, True),
        ("b", {"kind": "component", "majors": ["04"]}, "garden", None, 20, 3, False),
    ]
    assert parse_document(yaml.safe_load(dump_document(rules, "n", 5))) == rules
    with pytest.raises(InvalidInput) as raised:
        parse_document({"rules": [{"name": "a", "unit": "x"}], "owner": "me"})
    assert raised.value.errors == [
        {"field": "owner", "message": "unknown key 'owner' (known: version, note, rules)"}
    ]
    with pytest.raises(InvalidInput):
        parse_document("[" * 5000)
