"""Simulation of rule sets on past cases, and each rule's record, on hand-built cases."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import Database
from api.settings import Settings
from cases.deadlines import TZ
from cases.rule_quality import MARGIN, Router, quality, quality_report, simulate
from cases.rule_sets import create_version, parse_document
from cases.rules import CaseFacts, evaluate, load_rules
from geo.errors import InvalidInput, NotFound
from tests.conftest import PASSWORD, CloneDb, make_app
from tests.test_rule_sets import with_router

S1 = "431202001"  # 城中街道, 鹤城区 (HC)
JAN, FEB, MAR = (datetime(2025, m, 1, tzinfo=TZ) for m in (1, 2, 3))

RULES_YAML = """
note: 模拟用规则
rules:
  - name: 暴露垃圾 → 辖区环卫
    match: {classes: ['06010']}
    target: area_sanitation
  - name: 供水井盖 → 自来水公司
    match: {classes: ['01001']}
    unit: water
    priority: 1
  - name: 兜底 → 街道
    match: {}
    target: street_office
"""


@pytest.fixture(scope="module")
async def qdb(clone_db: CloneDb) -> AsyncIterator[Database]:
    """A throwaway clone for hand-built cases."""
    database = Database(await clone_db(), pool_size=4)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def version(qdb: Database) -> int:
    """The test rule set, stored (not active: the demo set stays in force)."""
    async with qdb.sessions() as session:
        v = await create_version(session, parse_document(RULES_YAML), "模拟用规则", None, activate=False)
        await session.commit()
    return v


async def add_case(
    session: AsyncSession,
    number: str,
    category: str,
    filed_at: datetime,
    events: list[tuple[str, str, dict[str, Any]]],
    *,
    area: str = "HC",
    street: str | None = S1,
    status: str = "closed",
    handle_deadline_at: datetime | None = None,
    handled_at: datetime | None = None,
) -> int:
    """A case with its events (action, to_status, payload) one second apart, straight into SQL."""
    first_rule = next((e[2].get("rule") for e in events if e[0] == "dispatch"), None) or {}
    case_id = await session.scalar(
        text("""
        WITH r AS (
            INSERT INTO reports (source, kind, category, status, geom, received_at)
            VALUES ('hotline', :kind, :cat, 'filed', ST_SetSRID(ST_MakePoint(110.0, 27.55), 4490), :at)
            RETURNING id)
        INSERT INTO cases (number, status, report_id, kind, category, street_code, community_code,
                           area_code, geom, filed_at, handle_deadline_at, handled_at, rule_id, rule_set)
        SELECT :number, :status, r.id, :kind, :cat, :street, NULL, :area,
               ST_SetSRID(ST_MakePoint(110.0, 27.55), 4490), :at, :deadline, :handled, :rule_id, :rule_set
        FROM r RETURNING id"""),
        {
            "number": number,
            "status": status,
            "kind": "component" if category.startswith("01") else "event",
            "cat": category,
            "street": street,
            "area": area,
            "at": filed_at,
            "deadline": handle_deadline_at,
            "handled": handled_at,
            "rule_id": first_rule.get("rule_id"),
            "rule_set": first_rule.get("rule_set"),
        },
    )
    await session.execute(
        text(
            "INSERT INTO case_events (case_id, at, action, to_status, payload) "
            "VALUES (:c, :at, :action, :to, CAST(:p AS jsonb))"
        ),
        [
            {
                "c": case_id,
                "at": filed_at + timedelta(seconds=i + 1),
                "action": action,
                "to": to,
                "p": json.dumps(payload, ensure_ascii=False),
            }
            for i, (action, to, payload) in enumerate([("file", "filed", {}), *events])
        ],
    )
    return case_id


def by_rule(unit: str, rule_id: int, rule_set: int) -> tuple[str, str, dict[str, Any]]:
    return ("dispatch", "dispatched", {"unit": unit, "rule": {"rule_id": rule_id, "rule_set": rule_set}})


def by_hand(unit: str) -> tuple[str, str, dict[str, Any]]:
    return ("dispatch", "dispatched", {"unit": unit, "rule": None})


def returned(unit: str, reason: str) -> tuple[str, str, dict[str, Any]]:
    return ("return", "returned", {"unit": unit, "reason": reason})


# --- simulation -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sim_cases(qdb: Database, version: int) -> None:
    """10 dispatched cases in January: 3 would move jd-431202001 → hw-hc, 1 drainage → water."""
    demo = 1
    async with qdb.sessions() as session:
        day = JAN + timedelta(days=3)
        for i in range(3):  # garbage the street office got; the test set sends it to sanitation
            await add_case(session, f"SIM-A{i}", "06010", day, [by_rule(f"jd-{S1}", 38, demo)])
        for i in range(2):
            await add_case(session, f"SIM-B{i}", "06010", day, [by_rule("hw-hc", 27, demo)])
        await add_case(session, "SIM-C0", "01001", day, [by_hand("drainage")])
        for i in range(2):
            await add_case(session, f"SIM-D{i}", "01001", day, [by_rule("water", 7, demo)])
        await add_case(session, "SIM-E0", "09005", day, [by_rule(f"jd-{S1}", 38, demo)])
        # Returned and re-dispatched: the first dispatch counts.
        await add_case(
            session,
            "SIM-E1",
            "09005",
            JAN,  # the first instant of the period is inside it
            [by_hand(f"jd-{S1}"), returned(f"jd-{S1}", "not_our_responsibility"), by_hand("cgj-hc")],
        )
        # Outside the period, or never dispatched: not counted.
        await add_case(session, "SIM-X0", "06010", JAN - timedelta(seconds=1), [by_hand(f"jd-{S1}")])
        await add_case(session, "SIM-X1", "06010", FEB, [by_hand(f"jd-{S1}")])
        await add_case(session, "SIM-X2", "06010", JAN + timedelta(days=9), [], status="filed")
        await session.commit()


async def test_simulation_counts_and_moves(qdb: Database, version: int, sim_cases: None) -> None:
    async with qdb.sessions() as session:
        result = await simulate(session, version, JAN, FEB)
        by_text = await simulate(session, parse_document(RULES_YAML), JAN, FEB)
    assert (result["cases"], result["changed"], result["unchanged"]) == (10, 4, 6)
    assert (result["by_hand"], result["unmatched"], result["version"], result["rules"]) == (2, 0, version, 3)
    assert [(m["from"], m["to"], m["count"]) for m in result["moves"]] == [
        (f"jd-{S1}", "hw-hc", 3),
        ("drainage", "water", 1),
    ]
    assert result["moves"][0]["samples"] == ["SIM-A0", "SIM-A1", "SIM-A2"]
    assert result["moves"][1]["to_name"] == "怀化市自来水有限公司"
    assert [(r["name"], r["cases"], r["changed"]) for r in result["by_rule"]] == [
        ("暴露垃圾 → 辖区环卫", 5, 3),
        ("供水井盖 → 自来水公司", 3, 1),
        ("兜底 → 街道", 2, 0),
    ]
    assert result["elapsed_ms"] >= 0
    assert {k: v for k, v in by_text.items() if k not in ("elapsed_ms", "version", "by_rule")} == {
        k: v for k, v in result.items() if k not in ("elapsed_ms", "version", "by_rule")
    }
    assert by_text["version"] is None and by_text["by_rule"][0]["rule_id"] is None


async def test_simulation_period_and_active_units(qdb: Database, version: int, sim_cases: None) -> None:
    async with qdb.sessions() as session:
        # Only the case filed at the very start of January.
        one = await simulate(session, version, JAN, JAN + timedelta(days=1))
        assert (one["cases"], one["changed"], one["moves"]) == (1, 0, [])
        # Naive times are Asia/Shanghai; to is exclusive: the February case is out.
        naive = await simulate(session, version, datetime(2025, 1, 1), datetime(2025, 2, 1))
        assert naive["cases"] == 10 and naive["from"] == JAN
        with_feb = await simulate(session, version, JAN, FEB + timedelta(seconds=1))
        assert with_feb["cases"] == 11 and with_feb["changed"] == 5
        # A unit gone inactive: its rule falls through, as at dispatch.
        await session.execute(text("UPDATE units SET active = false WHERE code = 'water'"))
        gone = await simulate(session, version, JAN, FEB)
        await session.rollback()
        assert gone["changed"] == 6 and ("water", f"jd-{S1}", 2) in [
            (m["from"], m["to"], m["count"]) for m in gone["moves"]
        ]
        with pytest.raises(InvalidInput):
            await simulate(session, version, FEB, JAN)
        with pytest.raises(NotFound):
            await simulate(session, 999, JAN, FEB)


async def test_simulate_over_http(settings: Settings, qdb: Database, version: int, sim_cases: None) -> None:
    app = with_router(make_app(settings, qdb))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.11", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://citygrid.test") as c:

        async def headers(who: str) -> dict[str, str]:
            r = await c.post("/api/v1/auth/token", data={"username": who, "password": PASSWORD})
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        period = {"from": "2025-01-01T00:00:00+08:00", "to": "2025-02-01T00:00:00+08:00"}
        planner = await headers("planner01")
        r = await c.post(
            "/api/v1/dispatch-rules/simulate", json={"rules": RULES_YAML, **period}, headers=planner
        )
        assert r.status_code == 200, r.text
        assert (r.json()["cases"], r.json()["changed"]) == (10, 4)
        r = await c.post(
            "/api/v1/dispatch-rules/simulate", json={"rules": version, **period}, headers=planner
        )
        assert r.status_code == 200 and r.json()["moves"][0]["count"] == 3
        r = await c.post("/api/v1/dispatch-rules/simulate", json=period, headers=planner)
        assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["cases"] == 10
        bad = RULES_YAML.replace("unit: water", "unit: nosuchunit")
        r = await c.post("/api/v1/dispatch-rules/simulate", json={"rules": bad, **period}, headers=planner)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "rules[1].unit"
        r = await c.post(
            "/api/v1/dispatch-rules/simulate",
            json={"rules": version, **period},
            headers=await headers("operator01"),
        )
        assert r.status_code == 403
        r = await c.post(
            "/api/v1/dispatch-rules/simulate",
            json={"rules": version, "from": period["to"], "to": period["from"]},
            headers=planner,
        )
        assert r.status_code == 422

        r = await c.get(
            "/api/v1/dispatch-rules/quality",
            params={
                "version": version,
                "from": "2025-02-01T00:00:00+08:00",
                "to": "2025-03-01T00:00:00+08:00",
            },
            headers=await headers("supervisor01"),
        )
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version and "rules" in r.json()


async def test_the_router_agrees_with_evaluate(qdb: Database) -> None:
    """The shortcuts of ``Router`` (class filter, cache) give ``evaluate``'s answers: every class
    in every street of the demo, with the demo set, and a unit gone inactive."""
    async with qdb.sessions() as session:
        rules = await load_rules(session, 1)
        active = dict((await session.execute(text("SELECT code, active FROM units"))).all())
        classes = (await session.execute(text("SELECT code, kind FROM matter_classes"))).all()
        streets = (
            await session.execute(text("SELECT code, area_code FROM regions WHERE level = 'street'"))
        ).all()
    active["water"] = False
    router = Router(rules, active)
    ids = {r.id: i for i, r in enumerate(router.rules)}
    checked = 0
    for code, kind in classes:
        for street, area in [*streets, (None, None), (None, "HC")]:
            facts = CaseFacts(code.strip(), kind, area, street)
            d = evaluate(rules, facts, active)
            assert router.route(facts) == (ids.get(d.rule_id), d.unit_code), facts
            checked += 1
    assert checked > 1000


# --- quality --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def quality_cases(qdb: Database, version: int) -> dict[str, int]:
    """February's cases of the test set's three rules, returns, re-dispatches and deadlines."""
    async with qdb.sessions() as session:
        ids = {r.name: r.id for r in await load_rules(session, version)}
        a, b, c = ids["暴露垃圾 → 辖区环卫"], ids["供水井盖 → 自来水公司"], ids["兜底 → 街道"]
        day = FEB + timedelta(days=2)
        due, early, late = day + timedelta(days=1), day + timedelta(hours=5), day + timedelta(days=2)
        far = datetime(2099, 1, 1, tzinfo=TZ)
        v = version
        # Rule a: 6 cases, 3 returned (4 returns), 4 re-dispatches, 2 overdue.
        await add_case(
            session,
            "Q-A1",
            "06010",
            day,
            [by_rule("hw-hc", a, v), returned("hw-hc", "not_our_responsibility"), by_hand(f"jd-{S1}")],
            handle_deadline_at=due,
            handled_at=early,
        )
        await add_case(
            session,
            "Q-A2",
            "06010",
            day,
            [
                by_rule("hw-hc", a, v),
                returned("hw-hc", "wrong_location"),
                by_rule("hw-hc", a, v),
                returned("hw-hc", "needs_another_unit"),
                by_hand("cgj-hc"),
            ],
            status="dispatched",
            handle_deadline_at=far,
        )
        await add_case(
            session,
            "Q-A3",
            "06010",
            day,
            [by_rule("hw-hc", a, v), returned("hw-hc", "not_our_responsibility"), by_hand("cgj-hc")],
            handle_deadline_at=due,
            handled_at=early,
        )
        await add_case(
            session, "Q-A4", "06010", day, [by_rule("hw-hc", a, v)], handle_deadline_at=due, handled_at=late
        )
        await add_case(
            session,
            "Q-A5",
            "06010",
            day,
            [by_rule("hw-hc", a, v)],
            status="dispatched",
            handle_deadline_at=day,  # long past
        )
        await add_case(
            session, "Q-A6", "06010", day, [by_rule("hw-hc", a, v)], handle_deadline_at=due, handled_at=early
        )
        # Rule b: 10 cases, 1 returned; a child unit's return to its dispatch center is not one.
        for i in range(10):
            events = [by_rule("water", b, v)]
            if i == 0:
                events += [returned("water", "other"), by_rule("water", b, v)]
            if i == 1:
                events += [("return", "dispatched", {"unit": "water", "reason": "wrong_location"})]
            await add_case(
                session,
                f"Q-B{i}",
                "01001",
                day,
                events,
                handle_deadline_at=due,
                handled_at=late if i == 2 else early,
            )
        # Rule c: 4 cases, none returned, one suspended past its (frozen) deadline: not overdue.
        for i in range(4):
            await add_case(
                session,
                f"Q-C{i}",
                "09005",
                day,
                [by_rule(f"jd-{S1}", c, v)],
                status="suspended" if i == 0 else "closed",
                handle_deadline_at=day if i == 0 else due,
                handled_at=None if i == 0 else early,
            )
        # By hand first: no rule's. Version 1 (demo): a row of its own. March: outside.
        await add_case(
            session,
            "Q-H1",
            "06010",
            day,
            [by_hand("hw-hc"), returned("hw-hc", "wrong_location"), by_hand(f"jd-{S1}")],
        )
        await add_case(
            session, "Q-V1", "06010", day, [by_rule("hw-hc", 27, 1), returned("hw-hc", "wrong_location")]
        )
        await add_case(
            session, "Q-M1", "06010", MAR, [by_rule("hw-hc", a, v), returned("hw-hc", "wrong_location")]
        )
        await session.commit()
    return {"a": a, "b": b, "c": c}


async def test_quality_figures(qdb: Database, version: int, quality_cases: dict[str, int]) -> None:
    async with qdb.sessions() as session:
        report = await quality_report(session, version, FEB, MAR)
        every_version = await quality(session, None, FEB, MAR)
        with_march = await quality(session, version, FEB, MAR + timedelta(days=1))
    rules = report["rules"]
    assert [r["rule_id"] for r in rules] == [quality_cases[k] for k in "abc"]  # the worst first
    a, b, c = rules
    assert {k: a[k] for k in a if k not in ("rule_id", "baseline_rate")} == {
        "rule_set": version,
        "name": "暴露垃圾 → 辖区环卫",
        "position": 10,
        "unit": None,
        "target": "area_sanitation",
        "routed": 6,
        "returned": 3,
        "returns": 4,
        "returns_by_reason": {
            "not_our_responsibility": 2,
            "wrong_location": 1,
            "needs_another_unit": 1,
            "other": 0,
        },
        "redispatches": 4,
        "overdue": 2,
        "overdue_share": 0.3333,
        "return_rate": 0.5,
        "stands_out": True,
    }
    assert a["baseline_rate"] == round(1 / 14, 4)
    assert (b["routed"], b["returned"], b["returns"], b["redispatches"], b["overdue"]) == (10, 1, 1, 1, 1)
    assert b["returns_by_reason"] == {
        "not_our_responsibility": 0,
        "wrong_location": 0,
        "needs_another_unit": 0,
        "other": 1,
    }
    assert (b["return_rate"], b["overdue_share"], b["stands_out"], b["unit"]) == (0.1, 0.1, False, "water")
    assert (c["routed"], c["returned"], c["overdue"], c["return_rate"], c["stands_out"]) == (
        4,
        0,
        0,
        0.0,
        False,
    )
    assert (report["routed"], report["returned"], report["return_rate"]) == (20, 4, 0.2)
    assert report["margin"] == MARGIN and report["min_cases"] == 5

    # All versions: the demo rule's single case is a row of its own, too few to stand out.
    demo = next(r for r in every_version if r["rule_set"] == 1)
    assert (demo["rule_id"], demo["routed"], demo["returned"], demo["stands_out"]) == (27, 1, 1, False)
    assert every_version[0]["rule_id"] == quality_cases["a"]
    assert next(r for r in with_march if r["rule_id"] == quality_cases["a"])["routed"] == 7


async def test_quality_of_an_unknown_version(qdb: Database) -> None:
    async with qdb.sessions() as session:
        with pytest.raises(NotFound):
            await quality(session, 999)
        assert await quality(session, 1, datetime(2001, 1, 1), datetime(2001, 2, 1)) == []


# --- synthetic load (for the performance figure; see the report) ------------------------------


async def synthetic_cases(session: AsyncSession, n: int, start: datetime, days: int = 365) -> None:
    """``n`` dispatched cases spread over ``days`` from ``start``: random grids and classes, a
    file, dispatch (with a 38-rule trace, as real ones), sign and handle event each."""
    await session.execute(text("SELECT setseed(0.42)"))
    await session.execute(
        text("""
        CREATE TEMP TABLE synth ON COMMIT DROP AS
        WITH g AS (SELECT array_agg(code ORDER BY code) AS codes FROM unit_grids),
             m AS (SELECT array_agg(code ORDER BY code) AS codes, array_agg(kind ORDER BY code) AS kinds
                   FROM matter_classes WHERE active),
             u AS (SELECT array_agg(code ORDER BY code) AS codes FROM units WHERE active)
        SELECT i, g.codes[1 + floor(random() * cardinality(g.codes))::int] AS grid,
               1 + floor(power(random(), 3) * cardinality(m.codes))::int AS ci, m.codes AS classes,
               m.kinds, u.codes[1 + floor(random() * cardinality(u.codes))::int] AS unit,
               CAST(:start AS timestamptz) + random() * make_interval(days => :days) AS at
        FROM generate_series(1, :n) i, g, m, u"""),
        {"n": n, "start": start, "days": days},
    )
    await session.execute(
        text("""
        INSERT INTO reports (source, kind, category, description, status, geom, received_at)
        SELECT 'hotline', s.kinds[s.ci], s.classes[s.ci], 'synthetic ' || s.i, 'filed',
               ST_SetSRID(ST_MakePoint(110.0, 27.55), 4490), s.at
        FROM synth s""")
    )
    await session.execute(
        text("""
        INSERT INTO cases (number, status, report_id, kind, category, grid_code, community_code,
                           street_code, area_code, geom, filed_at, unit_id)
        SELECT 'SYN-' || s.i, 'handled', r.id, s.kinds[s.ci], s.classes[s.ci], g.code, g.community_code,
               left(g.code, 9), g.area_code, r.geom, s.at, (SELECT id FROM units WHERE code = s.unit)
        FROM synth s
        JOIN reports r ON r.description = 'synthetic ' || s.i
        JOIN unit_grids g ON g.code = s.grid""")
    )
    trace = [
        {
            "rule": i,
            "name": f"规则 {i}",
            "matched": False,
            "reason": f"class 06010 not in classes ['0{i:04d}']",
        }
        for i in range(38)
    ]
    await session.execute(
        text("""
        INSERT INTO case_events (case_id, at, action, to_status, payload)
        SELECT c.id, c.filed_at + make_interval(mins => e.k), e.action, e.to_status,
               CASE WHEN e.action = 'dispatch'
                    THEN jsonb_build_object('unit', s.unit, 'rule',
                         jsonb_build_object('rule_set', 1, 'rule_id', 1, 'trace', CAST(:trace AS jsonb)))
                    ELSE '{}'::jsonb END
        FROM synth s JOIN cases c ON c.number = 'SYN-' || s.i
        CROSS JOIN (VALUES (0, 'file', 'filed'), (1, 'dispatch', 'dispatched'), (2, 'sign', 'dispatched'),
                           (3, 'handle', 'handled')) AS e(k, action, to_status)
        ORDER BY c.id, e.k"""),
        {"trace": json.dumps(trace, ensure_ascii=False)},
    )
