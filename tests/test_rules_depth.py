"""Dispatch rules in depth: community, grid, responsibility area, component owner, time of day
and day type, on the demo geography with its generated responsibility areas.

Runs on its own clone of the seeded database, with the demo's roads and landmarks
(geo.addressing, loaded here when the template lacks them), the demo rules and the demo
responsibility areas (geo.demo_areas).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import Database
from cases.deadlines import TZ
from cases.demo_rules import DEMO_RULES, demo_rules, load_demo_rules
from cases.rules import (
    CaseFacts,
    Rule,
    case_facts,
    evaluate,
    facts_for_case_row,
    suggest,
    validate_match,
    validate_rule,
)
from geo import responsibility
from geo.demo_areas import COMPOUND_AREAS, PROPERTY_COMPANIES, load_demo_areas
from geo.locator import locate_cgcs2000
from geo.pg import raw_connection
from geo.responsibility import AreaHit
from tests.conftest import CloneDb

WEEKDAY_10AM = datetime(2025, 10, 9, 10, 0, tzinfo=TZ)  # a Thursday, a working day


@cache
def demo_city() -> Any:
    from geo import boundaries
    from grids import demo

    counties = boundaries.county_outlines()
    return demo.generate({code: outline for code, (_, outline) in counties.items()})


@pytest.fixture(scope="module")
async def depth_db(clone_db: CloneDb) -> AsyncIterator[Database]:
    database = Database(await clone_db(), pool_size=2)
    async with database.sessions() as session:
        if not await session.scalar(text("SELECT count(*) FROM roads")):
            from geo.addressing import load_addressing

            await load_addressing(session, demo_city())
        await load_demo_rules(session)
        await load_demo_areas(session)
        await session.commit()
    yield database
    await database.dispose()


@pytest.fixture
async def session(depth_db: Database) -> AsyncIterator[AsyncSession]:
    """A session whose changes are rolled back."""
    async with depth_db.sessions() as s:
        yield s
        await s.rollback()


def rule(rid: int, match: dict[str, Any], unit: str | None = None, target: str | None = None) -> Rule:
    return Rule(rid, rid * 10, f"rule {rid}", match, unit, target, None, 3, True)


async def facts_at(
    session: AsyncSession,
    category: str,
    kind: str,
    x: float,
    y: float,
    component: str | None = None,
    at: datetime = WEEKDAY_10AM,
) -> CaseFacts:
    """The facts of a case at a CGCS2000 point, located as intake would."""
    loc = await locate_cgcs2000(await raw_connection(session), x, y)
    return CaseFacts(
        category, kind, loc.area[0], loc.street[0], loc.community[0], loc.grid, component, lon=x, lat=y, at=at
    )


async def area_point(session: AsyncSession, where: str) -> Any:
    """A point inside a demo responsibility area (``where`` filters ``a``, ``u`` and the area ``m``)."""
    return (
        await session.execute(
            text(f"""
            SELECT a.id, a.name, a.kind, u.code AS owner, m.code AS area,
                   ST_X(ST_PointOnSurface(a.geom)) AS x, ST_Y(ST_PointOnSurface(a.geom)) AS y
            FROM responsibility_areas a JOIN units u ON u.id = a.owner_unit_id
            JOIN management_areas m ON ST_Contains(m.geom, ST_PointOnSurface(a.geom))
            WHERE a.generated AND {where} ORDER BY a.name LIMIT 1""")
        )
    ).one()


async def free_point(session: AsyncSession, area: str, offset: int = 0) -> tuple[float, float]:
    """A grid point of ``area`` outside every responsibility area."""
    row = (
        await session.execute(
            text("""
            SELECT ST_X(p) AS x, ST_Y(p) AS y FROM (
                SELECT ST_PointOnSurface(g.geom) AS p, g.code FROM unit_grids g WHERE g.area_code = :area) q
            WHERE NOT EXISTS (SELECT 1 FROM responsibility_areas a WHERE ST_Intersects(a.geom, q.p))
            ORDER BY q.code LIMIT 1 OFFSET :offset"""),
            {"area": area, "offset": offset},
        )
    ).one()
    return row.x, row.y


async def component(session: AsyncSession, class_code: str, owner: str | None) -> Any:
    return (
        await session.execute(
            text("""
            SELECT c.code, ST_X(c.geom) AS x, ST_Y(c.geom) AS y FROM components c
            LEFT JOIN units u ON u.id = c.owner_unit_id
            WHERE c.class_code = :cls AND u.code IS NOT DISTINCT FROM :owner ORDER BY c.code LIMIT 1"""),
            {"cls": class_code, "owner": owner},
        )
    ).one()


def reason_of(d: Any, name_start: str) -> str:
    return next(t["reason"] for t in d.trace if t["name"].startswith(name_start))


# --- the demo areas ---------------------------------------------------------------------------


async def test_demo_areas_are_plausible_and_reload_idempotently(session: AsyncSession) -> None:
    rows = (
        await session.execute(
            text("""
            SELECT a.kind, a.name, u.code AS owner, a.matter_classes, ST_Area(a.geom::geography) AS m2,
                   ST_IsValid(a.geom) AS valid,
                   (SELECT array_agg(DISTINCT g.area_code) FROM unit_grids g
                    WHERE ST_Intersects(g.geom, ST_PointOnSurface(a.geom))) AS areas
            FROM responsibility_areas a JOIN units u ON u.id = a.owner_unit_id WHERE a.generated""")
        )
    ).all()
    by_kind: dict[str, list[Any]] = {}
    for r in rows:
        by_kind.setdefault(r.kind, []).append(r)
    assert all(r.valid for r in rows)
    compounds = by_kind["property_compound"]
    assert 25 <= len(compounds) <= 35
    assert {r.owner for r in compounds} <= set(PROPERTY_COMPANIES) and len({r.owner for r in compounds}) >= 4
    assert all(r.areas[0] in COMPOUND_AREAS for r in compounds)
    assert all(5_000 < r.m2 < 80_000 for r in compounds)  # 0.5–8 ha: block-sized
    assert len({r.name for r in compounds}) == len(compounds)
    assert {r.owner for r in by_kind["park"]} == {"garden"} and len(by_kind["park"]) >= 3
    assert {r.owner for r in by_kind["construction_site"]} == {"zjj"} and len(
        by_kind["construction_site"]
    ) == 3
    assert {r.owner for r in by_kind["road_contract"]} >= {"cgj", "cgj-hc"}
    assert all(
        r.matter_classes == ["06013", "06048", "06049", "06050", "06051", "06052"]
        for r in by_kind["road_contract"]
    )
    [bank] = by_kind["river_bank"]
    assert bank.owner == "garden" and "06025" in bank.matter_classes and "06010" not in bank.matter_classes
    assert await responsibility.overlaps(session) == []  # the demo's boundaries are clean

    # A second load replaces the generated areas with the same ones; an area an
    # administrator edited is kept and not generated again.
    first = next(r for r in compounds)
    area_id = await session.scalar(
        text("SELECT id FROM responsibility_areas WHERE name = :n"), {"n": first.name}
    )
    await responsibility.update(session, area_id, {"owner": "wy-06"})
    assert await load_demo_areas(session) == len(rows) - 1
    again = (
        await session.execute(
            text("SELECT kind, name, generated FROM responsibility_areas ORDER BY kind, name")
        )
    ).all()
    assert sorted((r.kind, r.name) for r in again) == sorted((r.kind, r.name) for r in rows)
    assert [r.generated for r in again if r.name == first.name] == [False]


# --- each rule kind on the demo geometry --------------------------------------------------------


async def test_inside_a_property_compound_the_property_company(session: AsyncSession) -> None:
    area = await area_point(session, "a.kind = 'property_compound' AND m.code = 'HC'")
    d = await suggest(session, await facts_at(session, "06010", "event", area.x, area.y))
    assert (d.unit_code, d.target) == (area.owner, "area_owner")
    assert d.rule_name == "物业管理区域内的垃圾、保洁、绿化事项 → 物业服务企业"
    assert d.reason.endswith(f"inside 物业管理区域 {area.name} (owner {area.owner})")
    assert d.unit_name and "物业" in d.unit_name
    assert d.facts["areas"]["property_compound"]["name"] == area.name
    # The same garbage outside every area goes to the area's sanitation, and says why not.
    x, y = await free_point(session, "HC")
    d = await suggest(session, await facts_at(session, "06010", "event", x, y))
    assert d.unit_code == "hw-hc"
    assert reason_of(d, "物业管理区域") == "not inside any 物业管理区域 that applies to class 06010"


async def test_a_compound_in_jk_beats_the_contracted_sanitation(session: AsyncSession) -> None:
    area = await area_point(session, "a.kind = 'property_compound' AND m.code = 'JK'")
    d = await suggest(session, await facts_at(session, "06010", "event", area.x, area.y))
    assert d.unit_code == area.owner and d.deadline_source == "matter_class"
    x, y = await free_point(session, "JK")
    assert (await suggest(session, await facts_at(session, "06010", "event", x, y))).unit_code == "hw-jk"
    # The property company inactive: the next rule that holds takes over, and the trace says so.
    await session.execute(text("UPDATE units SET active = false WHERE code = :c"), {"c": area.owner})
    d = await suggest(session, await facts_at(session, "06010", "event", area.x, area.y))
    assert d.unit_code == "hw-jk"
    assert reason_of(d, "物业管理区域").endswith(f"but unit {area.owner} is inactive")


async def test_parks_river_bank_and_construction_sites(session: AsyncSession) -> None:
    park = await area_point(session, "a.kind = 'park'")
    d = await suggest(session, await facts_at(session, "06047", "event", park.x, park.y))
    assert (d.unit_code, d.rule_name) == ("garden", "公园内的垃圾、保洁、绿化、公园秩序 → 公园管理单位")
    assert f"inside 公园 {park.name} (owner garden)" in d.reason
    # Noise in a park is no park matter: the daytime catch-all.
    d = await suggest(session, await facts_at(session, "06028", "event", park.x, park.y))
    assert d.rule_name == "属地兜底 → 所在街道（乡镇）"

    bank = await area_point(session, "a.kind = 'river_bank'")
    d = await suggest(session, await facts_at(session, "06025", "event", bank.x, bank.y))
    assert d.unit_code == "garden" and d.rule_name.startswith("滨河风光带")
    # The bank is registered for waterside matters only: garbage there is the sanitation's.
    d = await suggest(session, await facts_at(session, "06010", "event", bank.x, bank.y))
    assert d.unit_code == f"hw-{bank.area.lower()}"
    assert reason_of(d, "滨河风光带") == "not inside any 河岸 that applies to class 06010"

    site = await area_point(session, "a.kind = 'construction_site'")
    d = await suggest(session, await facts_at(session, "08002", "event", site.x, site.y))
    assert (d.unit_code, d.target) == ("zjj", "area_owner")
    x, y = await free_point(session, site.area)
    d = await suggest(session, await facts_at(session, "08002", "event", x, y))
    assert (d.unit_code, d.rule_name) == (
        f"cgj-{site.area.lower()}",
        "无证掘路、施工占道、渣土运输撒漏 → 区城管局",
    )


async def test_road_sections_city_against_district(session: AsyncSession) -> None:
    city = await area_point(session, "a.kind = 'road_contract' AND u.code = 'cgj'")
    d = await suggest(session, await facts_at(session, "06013", "event", city.x, city.y))
    assert (d.unit_code, d.priority) == ("cgj", 2)
    assert f"inside 道路养护标段 {city.name} (owner cgj)" in d.reason
    district = await area_point(session, "a.kind = 'road_contract' AND u.code = 'cgj-hc'")
    d = await suggest(session, await facts_at(session, "06013", "event", district.x, district.y))
    assert d.unit_code == "cgj-hc" and d.rule_name.startswith("道路养护标段")
    x, y = await free_point(session, "HC")
    d = await suggest(session, await facts_at(session, "06013", "event", x, y))
    assert d.unit_code == "cgj-hc" and d.rule_name.startswith("市政道路设施")


async def test_the_component_owner(session: AsyncSession) -> None:
    # Telecom covers belong to three operators: the register knows which.
    cover = await component(session, "01007", "mobile")
    facts = await facts_at(session, "01007", "component", cover.x, cover.y, cover.code)
    d = await suggest(session, facts)
    assert (d.unit_code, d.priority, d.target) == ("mobile", 1, "component_owner")
    assert d.reason == (
        f"井盖类部件 → 部件登记的权属单位: all conditions hold: class 01007, kind component; "
        f"component {cover.code} owned by mobile"
    )
    # Without the register the class rule names the lead operator.
    d = await suggest(session, replace(facts, component_code="43120201007999999"))
    assert d.unit_code == "telecom"
    assert reason_of(d, "井盖类部件") == (
        "all conditions hold: class 01007, kind component; "
        "but component 43120201007999999 is not in the component register"
    )
    # A registered cover without an owner goes by its class (every demo component has one).
    rain = await component(session, "01003", "drainage")
    await session.execute(
        text("UPDATE components SET owner_unit_id = NULL WHERE code = :c"), {"c": rain.code}
    )
    d = await suggest(session, await facts_at(session, "01003", "component", rain.x, rain.y, rain.code))
    assert d.unit_code == "drainage"
    assert reason_of(d, "井盖类部件").endswith(f"; but component {rain.code} has no registered owner")
    # Another component: a street tree, priority 2.
    tree = await component(session, "04002", "garden")
    d = await suggest(session, await facts_at(session, "04002", "component", tree.x, tree.y, tree.code))
    assert (d.unit_code, d.priority, d.rule_name) == ("garden", 2, "其他部件 → 部件登记的权属单位")
    # Safety first: a gas cover goes to the gas company by the first rule, register or not.
    gas = await component(session, "01011", "gas")
    d = await suggest(session, await facts_at(session, "01011", "component", gas.x, gas.y, gas.code))
    assert d.rule_name.startswith("燃气井盖") and len(d.trace) == 1


async def test_community_and_grid(session: AsyncSession) -> None:
    rows = (
        await session.execute(
            text("""
            SELECT g.code, g.community_code, ST_X(ST_PointOnSurface(g.geom)) AS x, ST_Y(ST_PointOnSurface(g.geom)) AS y
            FROM unit_grids g WHERE g.community_code = '431202001003' ORDER BY g.code LIMIT 2""")
        )
    ).all()
    grid, community = rows[0].code.strip(), rows[0].community_code
    rules = [
        rule(1, {"grids": [grid]}, "grid-team"),
        rule(2, {"communities": [community], "majors": ["06"]}, "community-team"),
        rule(3, {}, target="street_office"),
    ]
    first = await facts_at(session, "06010", "event", rows[0].x, rows[0].y)
    second = await facts_at(session, "06010", "event", rows[1].x, rows[1].y)
    elsewhere = await facts_at(session, "06010", "event", *(await free_point(session, "JK")))
    assert evaluate(rules, first).unit_code == "grid-team"
    d = evaluate(rules, second)
    assert d.unit_code == "community-team"
    assert d.trace[0]["reason"] == f"grid {second.grid_code} not in grids ['{grid}']"
    assert d.trace[1]["reason"] == f"all conditions hold: major 06, community {community}"
    d = evaluate(rules, elsewhere)
    assert d.unit_code == f"jd-{elsewhere.street_code}"
    assert d.trace[1]["reason"] == f"community {elsewhere.community_code} not in communities ['{community}']"
    outside = CaseFacts("06010", "event", None, None)
    assert evaluate(rules, outside).trace[0]["reason"] == (
        f"the case has no grid (outside the grids), rule needs ['{grid}']"
    )


async def test_time_of_day_across_midnight(session: AsyncSession) -> None:
    x, y = await free_point(session, "HC")
    base = await facts_at(session, "06028", "event", x, y)
    rules = demo_rules()
    street = f"jd-{base.street_code}"
    for local, unit in [
        ("22:00", "cgj-hc"),
        ("23:30", "cgj-hc"),
        ("00:00", "cgj-hc"),
        ("05:59", "cgj-hc"),
        ("06:00", street),
        ("14:00", street),
        ("21:59", street),
    ]:
        hour, minute = map(int, local.split(":"))
        d = evaluate(rules, replace(base, at=datetime(2025, 10, 9, hour, minute, tzinfo=TZ)))
        assert d.unit_code == unit, (local, d.reason)
    d = evaluate(rules, replace(base, at=datetime(2025, 10, 9, 15, 30, tzinfo=UTC)))  # 23:30 in Huaihua
    assert d.reason.endswith("time 23:30 in 22:00–06:00") and d.priority == 2
    d = evaluate(rules, replace(base, at=datetime(2025, 10, 9, 14, 0)))  # naive: local time
    assert reason_of(d, "夜间") == "time 14:00 not in 22:00–06:00"
    assert reason_of(evaluate(rules, replace(base, at=None)), "夜间") == (
        "the decision time is unknown, rule needs 22:00–06:00"
    )
    # suggest decides at the given time (default: now).
    d = await suggest(session, replace(base, at=datetime(2025, 10, 9, 23, 0, tzinfo=TZ)))
    assert d.unit_code == "cgj-hc" and d.facts["at"] == "2025-10-09T23:00:00+08:00"


async def test_working_and_rest_days(session: AsyncSession) -> None:
    facts = CaseFacts("09001", "event", "HC", "431202001", lon=None, lat=None)
    holiday = datetime(2025, 10, 3, 10, 0, tzinfo=TZ)  # 国庆节, a Friday
    make_up = datetime(2025, 9, 28, 10, 0, tzinfo=TZ)  # a Sunday worked for it (调休)
    d = await suggest(session, replace(facts, at=holiday))
    assert (d.unit_code, d.target) == ("cgj-hc", "area_urban_management")
    assert d.reason.endswith("2025-10-03 is a rest day")
    d = await suggest(session, replace(facts, at=make_up))
    assert d.unit_code == "jd-431202001"
    assert reason_of(d, "城中街道休息日") == "2025-09-28 is a working day, rule needs ['rest_day']"
    # An administrator's entry decides its day (a typhoon day off, say).
    await session.execute(
        text("INSERT INTO calendar_days (day, kind, name) VALUES ('2025-10-09', 'holiday', '台风停工')")
    )
    d = await suggest(session, replace(facts, at=WEEKDAY_10AM))
    assert d.unit_code == "cgj-hc" and d.reason.endswith("2025-10-09 is a rest day")
    # An injected day type wins over the calendar; pure evaluation without one cannot tell.
    d = await suggest(session, replace(facts, at=make_up, is_workday=False))
    assert d.unit_code == "cgj-hc"
    d = evaluate(demo_rules(), replace(facts, at=make_up))
    assert d.unit_code == "jd-431202001"
    assert reason_of(d, "城中街道休息日").startswith("the day type is unknown")


# --- precedence, the catch-all and the trace ----------------------------------------------------


async def test_an_event_no_rule_takes_still_reaches_the_catch_all(session: AsyncSession) -> None:
    rules = demo_rules()
    assert rules[-1].match == {} and rules[-1].target == "street_office"
    assert len({r.position for r in rules}) == len(rules) == len(DEMO_RULES)
    area = await area_point(session, "a.kind = 'property_compound'")
    d = await suggest(session, await facts_at(session, "06034", "event", area.x, area.y))
    assert d.rule_name == "属地兜底 → 所在街道（乡镇）" and len(d.trace) == len(DEMO_RULES)
    assert reason_of(d, "物业管理区域").startswith("class 06034 not in classes")
    body = d.as_dict()
    assert json.loads(json.dumps(body, ensure_ascii=False)) == body
    assert body["facts"]["areas"]["property_compound"]["owner"] == area.owner
    assert body["facts"]["at"] == WEEKDAY_10AM.isoformat()


async def test_new_rules_never_shadow_the_first_version(session: AsyncSession) -> None:
    """With no area, no component and no time, the new rules step aside: first-version outcomes."""
    rules = demo_rules()
    first_version = [r for r in rules if r.position % 10 == 0]
    classes = (await session.execute(text("SELECT code, kind FROM matter_classes WHERE active"))).all()
    for code, kind in classes:
        facts = CaseFacts(code.strip(), kind, "HC", "431202003")
        assert evaluate(rules, facts).unit_code == evaluate(first_version, facts).unit_code, code


async def test_case_rows_give_their_point(session: AsyncSession) -> None:
    area = await area_point(session, "a.kind = 'property_compound'")
    facts = await facts_at(session, "06010", "event", area.x, area.y)
    case_id = await session.scalar(
        text("""
        WITH r AS (
            INSERT INTO reports (source, kind, category, geom)
            VALUES ('hotline', 'event', '06010', ST_SetSRID(ST_MakePoint(:x, :y), 4490)) RETURNING id)
        INSERT INTO cases (number, status, report_id, kind, category, grid_code, community_code,
                           street_code, area_code, geom)
        SELECT 'DEPTH-TEST-1', 'filed', r.id, 'event', '06010', :grid, :community, :street, :area,
               ST_SetSRID(ST_MakePoint(:x, :y), 4490)
        FROM r RETURNING id"""),
        {
            "x": area.x,
            "y": area.y,
            "grid": facts.grid_code,
            "community": facts.community_code,
            "street": facts.street_code,
            "area": facts.area_code,
        },
    )
    row = (await session.execute(text("SELECT * FROM cases WHERE id = :id"), {"id": case_id})).one()
    from_row = case_facts(row)  # geom as hex EWKB
    assert from_row == replace(facts, at=None)
    assert (await facts_for_case_row(session, row)) == from_row
    bare = (
        await session.execute(
            text(
                "SELECT id, category, kind, area_code, street_code, community_code, grid_code, component_code "
                "FROM cases WHERE id = :id"
            ),
            {"id": case_id},
        )
    ).one()
    assert (await facts_for_case_row(session, bare)) == from_row  # the point read by id
    assert (await suggest(session, from_row)).unit_code == area.owner


# --- validation and purity of the new conditions ------------------------------------------------


def test_validate_the_new_conditions() -> None:
    good = {
        "communities": ["431202001003"],
        "grids": ["431202001003012"],
        "inside_area_kind": ["property_compound", "park"],
        "component_owner": True,
        "kind": "component",
        "time_of_day": {"from": "18:00", "to": "08:30"},
        "day_type": "rest_day",
    }
    assert validate_match(good) == []
    assert validate_match({"inside_area_kind": "park", "day_type": ["working_day", "rest_day"]}) == []
    problems = validate_match(
        {
            "communities": ["4312020010"],
            "grids": "431202001003012",
            "inside_area_kind": "zoo",
            "component_owner": "yes",
            "time_of_day": {"from": "25:00", "to": "8:30"},
            "day_type": "holiday",
        }
    )
    assert "communities: '4312020010' is not a 12-digit community code" in problems
    assert "grids must be a non-empty list" in problems
    assert any(p.startswith("inside_area_kind: 'zoo' is not a responsibility area kind") for p in problems)
    assert "component_owner must be true" in problems
    assert "time_of_day.from: '25:00' is not a time HH:MM (00:00–23:59)" in problems
    assert "time_of_day.to: '8:30' is not a time HH:MM (00:00–23:59)" in problems
    assert "day_type: 'holiday' is not 'working_day' or 'rest_day'" in problems
    assert validate_match({"time_of_day": {"from": "08:00", "to": "08:00"}}) == [
        "time_of_day: from and to are equal; leave the condition out for all day"
    ]
    assert validate_match({"time_of_day": "night"}) == [
        'time_of_day must be {"from": "HH:MM", "to": "HH:MM"}'
    ]
    assert validate_match({"component_owner": True, "kind": "event"}) == [
        "component_owner holds for component matters only, not kind ['event']: never matches"
    ]
    assert validate_rule(rule(1, {"majors": ["06"]}, target="area_owner")) == [
        "target area_owner needs an inside_area_kind condition (which area's owner)"
    ]
    assert validate_rule(rule(1, {"inside_area_kind": "park"}, target="area_owner")) == []
    assert validate_rule(rule(1, {"component_owner": True}, target="component_owner")) == []


def test_evaluate_is_pure_and_explains_missing_facts() -> None:
    rules = [
        rule(1, {"inside_area_kind": ["park", "property_compound"]}, target="area_owner"),
        rule(2, {"component_owner": True}, target="component_owner"),
        rule(3, {}, target="street_office"),
    ]
    facts = CaseFacts("06010", "event", "HC", "431202003")
    d = evaluate(rules, facts)
    assert [t["reason"] for t in d.trace[:2]] == [
        "the case has no location, rule needs inside 公园/物业管理区域",
        "kind event: only a component matter has a component owner",
    ]
    located = replace(facts, lon=110.0, lat=27.55)
    assert evaluate(rules, located).trace[0]["reason"] == (
        "the responsibility areas at the case were not looked up, rule needs inside 公园/物业管理区域"
    )
    # Two kinds hold the point: the smaller area decides.
    hits = {
        "park": AreaHit(1, "迎丰公园", "park", "garden", 80_000.0),
        "property_compound": AreaHit(2, "锦绣花园", "property_compound", "wy-01", 30_000.0),
    }
    d = evaluate(rules, replace(located, areas=hits))
    assert (d.unit_code, d.reason) == (
        "wy-01",
        "rule 1: all conditions hold: inside 物业管理区域 锦绣花园 (owner wy-01)",
    )
    # A component matter without a code, and one whose owner was not looked up.
    cover = CaseFacts("01001", "component", "HC", "431202003")
    assert evaluate(rules, cover).trace[1]["reason"] == "no component reported or snapped for the case"
    coded = replace(cover, component_code="43120201001000001")
    assert (
        evaluate(rules, coded).trace[1]["reason"]
        == "the owner of component 43120201001000001 was not looked up"
    )
    d = evaluate(rules, replace(coded, component_owner="water", component_registered=True), {"water": True})
    assert (d.unit_code, d.target) == ("water", "component_owner")
    assert d.reason == "rule 2: all conditions hold: component 43120201001000001 owned by water"
