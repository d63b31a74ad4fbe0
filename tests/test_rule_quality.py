"""Simulation of rule sets on past cases, and each rule's record, on hand-built cases."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import Database
from api.settings import Settings
from cases import rule_quality
from cases.deadlines import TZ
from cases.rule_quality import MARGIN, quality, quality_report, route_cases, simulate
from cases.rule_sets import create_version, parse_document
from cases.rules import case_facts, evaluate, load_rules, resolve_facts
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
    area: str | None = "HC",
    street: str | None = S1,
    community: str | None = None,
    grid: str | None = None,
    component: str | None = None,
    lon: float = 110.0,
    lat: float = 27.55,
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
            VALUES ('hotline', :kind, :cat, 'filed', ST_SetSRID(ST_MakePoint(:lon, :lat), 4490), :at)
            RETURNING id)
        INSERT INTO cases (number, status, report_id, kind, category, street_code, community_code,
                           grid_code, component_code, area_code, geom, filed_at, handle_deadline_at,
                           handled_at, rule_id, rule_set)
        SELECT :number, :status, r.id, :kind, :cat, :street, :community, :grid, :component, :area,
               ST_SetSRID(ST_MakePoint(:lon, :lat), 4490), :at, :deadline, :handled, :rule_id, :rule_set
        FROM r RETURNING id"""),
        {
            "number": number,
            "status": status,
            "kind": "component" if category.startswith("01") else "event",
            "cat": category,
            "street": street,
            "community": community,
            "grid": grid,
            "component": component,
            "lon": lon,
            "lat": lat,
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
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "to"
        r = await c.post("/api/v1/dispatch-rules/simulate", json={"rules": 1}, headers=planner)
        assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} == {"from", "to"}
        huge = {"rules": "# " + "x" * (3 * 1024 * 1024), **period}
        r = await c.post("/api/v1/dispatch-rules/simulate", json=huge, headers=planner)
        assert r.status_code == 413

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


@pytest.fixture(scope="module")
async def mixed_cases(qdb: Database) -> tuple[datetime, datetime]:
    """300 cases in March 2025 that exercise every condition of the demo set: responsibility
    areas (nested, class-restricted), registered and unknown components, night and day,
    working and rest days. Returns their period."""
    rng = random.Random(7)
    start = datetime(2025, 3, 1, tzinfo=TZ)  # a Saturday
    async with qdb.sessions() as session:
        grids = (
            await session.execute(
                text("""
            SELECT grid, community_code, area_code, street, x, y FROM (
                SELECT code::text AS grid, community_code, area_code, left(code, 9) AS street,
                       ST_X(ST_PointOnSurface(geom)) AS x, ST_Y(ST_PointOnSurface(geom)) AS y,
                       row_number() OVER (ORDER BY code) AS n
                FROM unit_grids WHERE code LIKE '431202001%' OR code LIKE '4312%9%0') g
            WHERE n % 7 = 0 ORDER BY grid LIMIT 30""")
            )
        ).all()
        for i, (kind, owner, radius, classes) in enumerate(
            [
                ("property_compound", "garden", 0.0015, None),
                ("property_compound", "water", 0.0008, None),  # inside the first: the smaller wins
                ("park", "garden", 0.001, ["06010"]),  # for one class only
                ("river_bank", "drainage", 0.001, None),
                ("construction_site", "power", 0.001, None),
                ("road_contract", "light", 0.001, None),
            ]
        ):
            g = grids[max(0, i - 1)]
            await session.execute(
                text("""
                INSERT INTO responsibility_areas (name, kind, owner_unit_id, matter_classes, geom)
                SELECT :name, :kind, u.id, :classes,
                       ST_Multi(ST_Buffer(ST_SetSRID(ST_MakePoint(:x, :y), 4490), :r))
                FROM units u WHERE u.code = :owner"""),
                {
                    "name": f"测试区域{i}",
                    "kind": kind,
                    "owner": owner,
                    "classes": classes,
                    "x": g.x,
                    "y": g.y,
                    "r": radius,
                },
            )
        components = (
            await session.execute(
                text("""
            SELECT DISTINCT ON (c.class_code) m.code::text AS category, c.code::text AS component,
                   ST_X(c.geom) AS x, ST_Y(c.geom) AS y, g.code::text AS grid, g.community_code,
                   g.area_code, left(g.code, 9) AS street
            FROM components c
            JOIN matter_classes m ON m.component_class = c.class_code AND m.active
            JOIN unit_grids g ON ST_Contains(g.geom, c.geom)
            ORDER BY c.class_code, c.code LIMIT 40""")
            )
        ).all()
        events = ["06010", "06012", "06036", "06047", "06013", "06050", "06028", "09001", "09002", "09005",
                  "08001", "08003", "06001", "07001", "06034", "10001"]  # fmt: skip
        for i in range(300):
            filed = start + timedelta(minutes=rng.randrange(14 * 24 * 60))
            unit = rng.choice(["hw-hc", "water", f"jd-{S1}", "cgj-hc", "garden"])
            if i % 4 == 0:
                c = rng.choice(components)
                component = c.component if i % 12 else ("43120200" + "9" * 9 if i % 24 else None)
                await add_case(
                    session, f"MIX-{i:03d}", c.category, filed, [by_rule(unit, 1, 1)], lon=c.x, lat=c.y,
                    grid=c.grid, community=c.community_code, street=c.street, area=c.area_code,
                    component=component,
                )  # fmt: skip
            else:
                g = grids[rng.randrange(6) if i % 3 else rng.randrange(len(grids))]
                await add_case(
                    session, f"MIX-{i:03d}", rng.choice(events), filed, [by_rule(unit, 1, 1)],
                    lon=g.x + rng.choice([0.0, 0.0, 0.0005, 0.0025]), lat=g.y, grid=g.grid,
                    community=g.community_code, street=g.street, area=g.area_code,
                )  # fmt: skip
        await session.commit()
    return start, start + timedelta(days=14)


async def naive_routes(
    session: AsyncSession, rules: list, start: datetime, end: datetime
) -> dict[str, tuple[int | None, str | None]]:
    """Case by case, as a dispatch at the time of the first one: ``resolve_facts`` + ``evaluate``."""
    active = dict((await session.execute(text("SELECT code, active FROM units"))).all())
    rows = (
        await session.execute(
            text("""
        SELECT c.*, ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat,
               (SELECT e.at FROM case_events e WHERE e.case_id = c.id AND e.action = 'dispatch'
                ORDER BY e.id LIMIT 1) AS dispatched
        FROM cases c WHERE c.filed_at >= :a AND c.filed_at < :b"""),
            {"a": start, "b": end},
        )
    ).all()
    positions = {r.id: r.position for r in rules}
    out = {}
    for row in rows:
        if row.dispatched is None:
            continue
        facts = await resolve_facts(session, replace(case_facts(row), at=row.dispatched), rules)
        d = evaluate(rules, facts, active)
        out[row.number] = (positions.get(d.rule_id), d.unit_code)
    return out


async def test_grouped_routing_agrees_with_dispatch(
    qdb: Database, mixed_cases: tuple[datetime, datetime]
) -> None:
    """``simulate``'s shortcuts (one query, decisions per distinct facts) decide every case as
    the dispatch itself would have, the demo set's areas, owners, times and day types included."""
    start, end = mixed_cases
    async with qdb.sessions() as session:
        rules = await load_rules(session, 1)
        fast = await route_cases(session, 1, start, end)
        assert fast == await naive_routes(session, rules, start, end)
        used = Counter(position for position, _ in fast.values())
        assert len(fast) == 300 and len(used) >= 12, used
        # Every kind of condition and target the demo set uses decided some case.
        by_position = {r.position: r for r in rules}
        for feature in ("inside_area_kind", "time_of_day", "day_type", "component_owner"):
            if any(feature in r.match for r in rules):
                assert any(feature in by_position[p].match for p in used if p is not None), feature
        for target in ("area_owner", "component_owner", "street_office", "area_sanitation"):
            if any(r.target == target for r in rules):
                assert any(by_position[p].target == target for p in used if p is not None), target
        # A unit gone inactive: the area it owns falls through to the next rule, in both.
        await session.execute(text("UPDATE units SET active = false WHERE code IN ('water', 'garden')"))
        assert await route_cases(session, 1, start, end) == await naive_routes(session, rules, start, end)
        result = await simulate(session, 1, start, end)
        await session.rollback()
    assert result["method"] == "grouped" and result["cases"] == 300


async def test_a_condition_unknown_here_is_resolved_per_case(
    qdb: Database, mixed_cases: tuple[datetime, datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A condition the rules module knows and this one does not (as time_of_day here): each
    case goes through ``resolve_facts``, slowly, to the same answers."""
    start, end = mixed_cases
    async with qdb.sessions() as session:
        grouped = await simulate(session, 1, start, end)
        monkeypatch.delitem(rule_quality._CONDITION_COLUMNS, "time_of_day")
        per_case = await simulate(session, 1, start, end)
        assert await route_cases(session, 1, start, end) == await naive_routes(
            session, await load_rules(session, 1), start, end
        )
    assert (grouped["method"], per_case["method"]) == ("grouped", "per_case")
    drop = ("method", "elapsed_ms")
    assert {k: v for k, v in per_case.items() if k not in drop} == {
        k: v for k, v in grouped.items() if k not in drop
    }


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


# --- synthetic load ---------------------------------------------------------------------------


async def synthetic_cases(
    session: AsyncSession, n: int, start: datetime, days: int = 365, areas: int = 0
) -> None:
    """``n`` dispatched cases spread over ``days`` from ``start`` (for the performance figure in
    the report, and below): random grids, classes skewed to a few, components of the register
    on component matters, a random first unit; a file, dispatch (with a 38-rule trace, as real
    ones), sign and handle event each. With ``areas``, that many responsibility areas of
    random kinds around random grids first."""
    await session.execute(text("SELECT setseed(0.42)"))
    if areas:
        await session.execute(
            text("""
            INSERT INTO responsibility_areas (name, kind, owner_unit_id, geom)
            SELECT 'synthetic area ' || i,
                   (ARRAY['property_compound', 'park', 'river_bank', 'construction_site',
                          'road_contract'])[1 + floor(random() * 5)::int],
                   (SELECT id FROM units WHERE active ORDER BY random() + i * 0 LIMIT 1),
                   ST_Multi(ST_Buffer(ST_PointOnSurface(g.geom), 0.001 + random() * 0.003))
            FROM generate_series(1, :a) i
            CROSS JOIN LATERAL (SELECT geom FROM unit_grids OFFSET floor(random() * 11000 + i * 0)::int LIMIT 1) g"""),
            {"a": areas},
        )
    await session.execute(
        text("""
        CREATE TEMP TABLE synth ON COMMIT DROP AS
        WITH g AS (SELECT array_agg(code ORDER BY code) AS codes FROM unit_grids),
             m AS (SELECT array_agg(code ORDER BY code) AS codes, array_agg(kind ORDER BY code) AS kinds
                   FROM matter_classes WHERE active),
             u AS (SELECT array_agg(code ORDER BY code) AS codes FROM units WHERE active),
             k AS (SELECT array_agg(code ORDER BY code) AS codes FROM components)
        SELECT i, g.codes[1 + floor(random() * cardinality(g.codes))::int] AS grid,
               1 + floor(power(random(), 3) * cardinality(m.codes))::int AS ci, m.codes AS classes,
               m.kinds, u.codes[1 + floor(random() * cardinality(u.codes))::int] AS unit,
               k.codes[1 + floor(random() * cardinality(k.codes))::int] AS component,
               CAST(:start AS timestamptz) + random() * make_interval(days => :days) AS at,
               random() * 0.0004 AS dx
        FROM generate_series(1, :n) i, g, m, u, k"""),
        {"n": n, "start": start, "days": days},
    )
    await session.execute(
        text("""
        INSERT INTO reports (source, kind, category, description, status, geom, received_at)
        SELECT 'hotline', s.kinds[s.ci], s.classes[s.ci], 'synthetic ' || s.i, 'filed',
               ST_Translate(ST_PointOnSurface(g.geom), s.dx, 0), s.at
        FROM synth s JOIN unit_grids g ON g.code = s.grid""")
    )
    await session.execute(
        text("""
        INSERT INTO cases (number, status, report_id, kind, category, grid_code, community_code,
                           street_code, area_code, component_code, geom, filed_at, unit_id)
        SELECT 'SYN-' || s.i, 'handled', r.id, s.kinds[s.ci], s.classes[s.ci], g.code, g.community_code,
               left(g.code, 9), g.area_code,
               CASE WHEN s.kinds[s.ci] = 'component' AND s.i % 5 > 0 THEN s.component END,
               r.geom, s.at, (SELECT id FROM units WHERE code = s.unit)
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


async def test_synthetic_cases_grouped_as_dispatched(clone_db: CloneDb) -> None:
    """On random cases with random areas, too, the grouped routing decides as the dispatch."""
    database = Database(await clone_db(), pool_size=2)
    start = datetime(2024, 1, 1, tzinfo=TZ)
    try:
        async with database.sessions() as session:
            await synthetic_cases(session, 400, start, days=60, areas=300)
            await session.commit()
        async with database.sessions() as session:
            rules = await load_rules(session, 1)
            end = start + timedelta(days=61)
            fast = await route_cases(session, 1, start, end)
            assert len(fast) == 400 and fast == await naive_routes(session, rules, start, end)
            result = await simulate(session, 1, start, end)
            assert result["cases"] == 400 and sum(m["count"] for m in result["moves"]) == result["changed"]
            assert sum(r["cases"] for r in result["by_rule"]) == 400
            first = dict(
                (
                    await session.execute(
                        text(
                            "SELECT DISTINCT ON (c.id) c.number, e.payload->>'unit' FROM cases c "
                            "JOIN case_events e ON e.case_id = c.id AND e.action = 'dispatch' ORDER BY c.id, e.id"
                        )
                    )
                ).all()
            )
            assert sum(1 for number, (_, unit) in fast.items() if unit != first[number]) == result["changed"]
            assert result["changed"] > 300  # the first units are random
    finally:
        await database.dispose()
