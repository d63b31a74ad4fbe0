"""Dispatch rules (派遣规则): pure evaluation, and the demo set on a throwaway PostGIS clone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import Database
from cases.demo_rules import DEMO_RULES, demo_rules, load_demo_rules
from cases.rules import (
    CaseFacts,
    Rule,
    evaluate,
    facts_of_case,
    load_rules,
    suggest,
    validate_match,
    validate_rule,
)
from geo.errors import NotFound
from geo.locator import locate_cgcs2000
from geo.pg import raw_connection
from tests.conftest import CloneDb


def rule(
    rid: int,
    match: dict[str, Any],
    unit: str | None = None,
    target: str | None = None,
    *,
    position: int | None = None,
    deadline: str | None = None,
    priority: int = 3,
    enabled: bool = True,
) -> Rule:
    return Rule(rid, position or rid * 10, f"rule {rid}", match, unit, target, deadline, priority, enabled)


GARBAGE_HC = CaseFacts("06010", "event", "HC", "431202003", "431202003001", "431202003001001")
CATCH_ALL = rule(99, {}, target="street_office")


# --- validation ---------------------------------------------------------------------------------


def test_validate_match_accepts_every_condition() -> None:
    match = {
        "classes": ["01001"],
        "majors": ["01"],
        "kind": "component",
        "areas": ["HC", "JK"],
        "streets": ["431202001"],
    }
    assert validate_match(match) == []
    assert validate_match({}) == []
    assert validate_match({"kind": ["component", "event"]}) == []


def test_validate_match_reports_problems() -> None:
    assert validate_match([]) == ["match must be an object, not list"]
    problems = validate_match(
        {"class": ["01001"], "majors": "06", "areas": [], "streets": ["4312020"], "kind": "thing"}
    )
    assert any("unknown condition 'class'" in p for p in problems)
    assert "majors must be a non-empty list" in problems
    assert "areas must be a non-empty list" in problems
    assert any("'4312020' is not a 9-digit street code" in p for p in problems)
    assert any("'thing'" in p for p in problems)
    assert validate_match({"classes": ["01001"], "majors": ["06"]}) == [
        "classes ['01001'] are all outside majors ['06']: never matches"
    ]


def test_validate_rule() -> None:
    assert validate_rule(rule(1, {}, target="street_office")) == []
    assert validate_rule(rule(1, {})) == ["a rule needs a unit or a target"]
    assert validate_rule(rule(1, {}, "water", "street_office")) == [
        "a rule names a unit or a target, not both"
    ]
    assert validate_rule(rule(1, {}, target="mayor")) == [
        "unknown target 'mayor' (known: street_office, area_urban_management, area_sanitation, "
        "area_owner, component_owner)"
    ]
    assert validate_rule(rule(1, {}, "water", priority=0)) == ["priority 0 is not 1 … 5"]


# --- evaluation ---------------------------------------------------------------------------------


def test_first_match_wins_and_a_specific_rule_before_a_major_one() -> None:
    rules = [rule(1, {"classes": ["06010"]}, "hw-hc", priority=2), rule(2, {"majors": ["06"]}, "cgj-hc")]
    d = evaluate(rules, GARBAGE_HC)
    assert (d.rule_id, d.unit_code, d.priority) == (1, "hw-hc", 2)
    assert [t["rule"] for t in d.trace] == [1]
    # Order is by position, not by list order: the major rule placed first wins.
    d = evaluate([rules[0], rule(2, {"majors": ["06"]}, "cgj-hc", position=5)], GARBAGE_HC)
    assert (d.rule_id, d.unit_code) == (2, "cgj-hc")
    assert d.trace[0]["reason"] == "all conditions hold: major 06"


def test_all_conditions_must_hold_any_value_within_one() -> None:
    both = rule(1, {"majors": ["06", "09"], "areas": ["JK", "HC"]}, "x")
    assert evaluate([both], GARBAGE_HC).unit_code == "x"
    assert evaluate([both], CaseFacts("06010", "event", "GX", "431221001")).unit_code is None
    assert evaluate([both], CaseFacts("07001", "event", "HC", "431202003")).unit_code is None
    d = evaluate([both], GARBAGE_HC)
    assert d.trace[0]["reason"] == "all conditions hold: major 06, area HC"
    assert d.reason == "rule 1: all conditions hold: major 06, area HC"


def test_kind_area_and_street_filters() -> None:
    rules = [
        rule(1, {"kind": "component"}, "a"),
        rule(2, {"areas": ["JK"]}, "b"),
        rule(3, {"streets": ["431202001", "431202002"]}, "c"),
        CATCH_ALL,
    ]
    assert evaluate(rules, CaseFacts("01001", "component", "HC", "431202003")).unit_code == "a"
    assert evaluate(rules, CaseFacts("06010", "event", "JK", "431202007")).unit_code == "b"
    assert evaluate(rules, CaseFacts("06010", "event", "HC", "431202002")).unit_code == "c"
    d = evaluate(rules, GARBAGE_HC)
    assert d.unit_code == "jd-431202003"
    assert [t["reason"] for t in d.trace] == [
        "kind event not in ['component']",
        "area HC not in areas ['JK']",
        "street 431202003 not in streets ['431202001', '431202002']",
        "catch-all (no conditions)",
    ]
    assert [t["matched"] for t in d.trace] == [False, False, False, True]
    assert d.trace[-1]["unit"] == "jd-431202003"


def test_targets_resolve_from_the_location() -> None:
    facts = CaseFacts("06010", "event", "GX", "431221001")
    for target, unit in [
        ("street_office", "jd-431221001"),
        ("area_urban_management", "cgj-gx"),
        ("area_sanitation", "hw-gx"),
    ]:
        d = evaluate([rule(1, {}, target=target)], facts)
        assert (d.unit_code, d.target) == (unit, target)


def test_disabled_and_invalid_rules_are_skipped_with_a_reason() -> None:
    rules = [
        rule(1, {"majors": ["06"]}, "off", enabled=False),
        rule(2, {"majors": "06"}, "broken"),
        rule(3, {"classes": ["06010"]}, "on", deadline="2wh"),
    ]
    d = evaluate(rules, GARBAGE_HC)
    assert (d.unit_code, d.deadline_class, d.deadline_source) == ("on", "2wh", "rule")
    assert d.trace[0] == {"rule": 1, "name": "rule 1", "matched": False, "reason": "rule disabled"}
    assert d.trace[1]["reason"] == "invalid rule: majors must be a non-empty list"


def test_the_trace_lists_every_rule_tried_until_the_winner() -> None:
    rules = [
        rule(1, {"majors": ["09"]}, "a"),
        rule(2, {"classes": ["01001", "01025"]}, "b"),
        rule(3, {"majors": ["06"], "areas": ["HC"]}, "c"),
        rule(4, {"majors": ["06"]}, "d"),
    ]
    d = evaluate(rules, GARBAGE_HC)
    assert d.as_dict()["trace"] == [
        {"rule": 1, "name": "rule 1", "matched": False, "reason": "class 06010 not in majors ['09']"},
        {
            "rule": 2,
            "name": "rule 2",
            "matched": False,
            "reason": "class 06010 not in classes ['01001', '01025']",
        },
        {
            "rule": 3,
            "name": "rule 3",
            "matched": True,
            "reason": "all conditions hold: major 06, area HC",
            "unit": "c",
        },
    ]
    assert d.as_dict()["facts"]["category"] == "06010"


def test_no_street_no_unit_and_never_raises() -> None:
    outside = CaseFacts("06034", "event", None, None)
    rules = [rule(1, {"areas": ["HC"]}, "a"), rule(2, {}, target="area_sanitation"), CATCH_ALL]
    d = evaluate(rules, outside)
    assert d.unit_code is None and d.rule_id is None and d.priority is None
    assert d.trace[0]["reason"] == "the case has no management area (outside the grids), rule needs ['HC']"
    assert (
        d.trace[2]["reason"]
        == "catch-all (no conditions); but street_office needs a street and the case has none"
    )
    assert d.reason.startswith("no rule gave a unit (3 tried); last: catch-all")
    assert d.as_dict()["unit_code"] is None
    assert evaluate([], outside).reason == "no rule gave a unit (0 tried)"


def test_an_unusable_unit_falls_through() -> None:
    rules = [rule(1, {"majors": ["06"]}, "gone"), rule(2, {"majors": ["06"]}, "asleep"), CATCH_ALL]
    d = evaluate(rules, GARBAGE_HC, {"asleep": False, "jd-431202003": True})
    assert d.unit_code == "jd-431202003"
    assert d.trace[0]["reason"] == "all conditions hold: major 06; but unit gone does not exist"
    assert d.trace[1]["reason"] == "all conditions hold: major 06; but unit asleep is inactive"


def test_demo_rules_are_valid_and_specific_before_general() -> None:
    rules = demo_rules()
    assert all(validate_rule(r) == [] for r in rules)
    assert rules[-1].match == {} and rules[-1].target == "street_office"
    assert len({r.position for r in rules}) == len(rules) == len(DEMO_RULES)
    # A class named by a rule is never taken by an earlier rule (else it would be dead).
    for i, r in enumerate(rules):
        area = r.match.get("areas", ["HC"])[0]
        street = r.match.get("streets", ["431202002"])[0]
        for code in r.match.get("classes", []):
            assert evaluate(rules[:i], CaseFacts(code, "event", area, street)).unit_code is None, (
                r.name,
                code,
            )


# --- the demo set in PostGIS --------------------------------------------------------------------


@pytest.fixture(scope="module")
async def rules_db(clone_db: CloneDb) -> AsyncIterator[Database]:
    """A throwaway clone of the demo with the demo rules loaded (rule set 1)."""
    database = Database(await clone_db(), pool_size=2)
    async with database.sessions() as session:
        await load_demo_rules(session)
        await session.commit()
    yield database
    await database.dispose()


@pytest.fixture
async def session(rules_db: Database) -> AsyncIterator[AsyncSession]:
    """A session whose changes are rolled back."""
    async with rules_db.sessions() as s:
        yield s
        await s.rollback()


async def facts_at(session: AsyncSession, category: str, kind: str, point_sql: str) -> CaseFacts:
    """The facts of a case at a real demo point (``point_sql`` selects x, y and a component code)."""
    row = (await session.execute(text(point_sql))).one()
    loc = await locate_cgcs2000(await raw_connection(session), row.x, row.y)
    return CaseFacts(category, kind, loc.area[0], loc.street[0], loc.community[0], loc.grid, row.component)


def component_in(class_code: str, area: str) -> str:
    return f"""
        SELECT ST_X(c.geom) AS x, ST_Y(c.geom) AS y, c.code AS component
        FROM components c JOIN unit_grids g ON ST_Contains(g.geom, c.geom)
        WHERE c.class_code = '{class_code}' AND g.area_code = '{area}' ORDER BY c.code LIMIT 1"""


def grid_in(area: str, offset: int = 0) -> str:
    return f"""
        SELECT ST_X(ST_PointOnSurface(geom)) AS x, ST_Y(ST_PointOnSurface(geom)) AS y, NULL AS component
        FROM unit_grids WHERE area_code = '{area}' ORDER BY code LIMIT 1 OFFSET {offset}"""


async def test_load_demo_rules_is_idempotent_and_every_unit_resolves(session: AsyncSession) -> None:
    before = await load_rules(session)
    assert await load_demo_rules(session) == len(DEMO_RULES)
    after = await load_rules(session)
    assert after == before  # same rows, same ids: cases keep their rule_id
    assert len(after) == len(DEMO_RULES)
    assert all(r.unit_code for r in after if r.target is None)
    # Every role a rule may target exists for every street and area of the demo.
    units = set(await session.scalars(text("SELECT code FROM units WHERE active")))
    streets = (
        await session.execute(text("SELECT code, area_code FROM regions WHERE level = 'street'"))
    ).all()
    for street, area in streets:
        assert {f"jd-{street}", f"cgj-{area.lower()}", f"hw-{area.lower()}"} <= units


async def test_every_class_in_every_street_gets_an_active_unit(session: AsyncSession) -> None:
    rules = await load_rules(session)
    active = dict((await session.execute(text("SELECT code, active FROM units"))).all())
    classes = (await session.execute(text("SELECT code, kind FROM matter_classes WHERE active"))).all()
    streets = (
        await session.execute(text("SELECT code, area_code FROM regions WHERE level = 'street'"))
    ).all()
    for code, kind in classes:
        for street, area in streets:
            d = evaluate(rules, CaseFacts(code, kind, area, street), active)
            assert d.unit_code is not None, (code, street, d.reason)


async def test_another_rule_set_is_separate(session: AsyncSession) -> None:
    assert await load_rules(session, rule_set=2) == []
    d = await suggest(session, GARBAGE_HC, rule_set=2)
    assert d.unit_code is None and d.reason == "rule set 2 has no rules"
    assert d.deadline_class == "4wh"  # the class default still helps the operator
    await load_demo_rules(session, rule_set=2)
    assert len(await load_rules(session, rule_set=2)) == len(DEMO_RULES)


async def test_water_cover_in_hc_goes_to_the_water_company(session: AsyncSession) -> None:
    facts = await facts_at(session, "01001", "component", component_in("01001", "HC"))
    assert facts.area_code == "HC" and facts.component_code
    # The register names the cover's owner (the water company) before the class rule does.
    d = await suggest(session, facts)
    assert (d.unit_code, d.priority, d.rule_name) == ("water", 1, "井盖类部件 → 部件登记的权属单位")
    # A cover without a component code goes by its class.
    d = await suggest(session, replace(facts, component_code=None))
    assert (d.unit_code, d.priority, d.rule_name) == ("water", 1, "供水井盖 → 自来水公司")
    assert (d.deadline_class, d.deadline_source) == ("urgent", "matter_class")
    assert d.unit_name == "怀化市自来水有限公司" and d.unit_id is not None
    body = d.as_dict()
    assert (body["unit_code"], body["unit_id"], body["unit_name"]) == ("water", d.unit_id, d.unit_name)
    assert body["rule_set"] == 1 and body["trace"][-1]["matched"] is True
    assert json.loads(json.dumps(body, ensure_ascii=False)) == body


async def test_garbage_in_jk_goes_to_the_contracted_sanitation(session: AsyncSession) -> None:
    facts = await facts_at(session, "06010", "event", grid_in("JK"))
    d = await suggest(session, facts)
    assert d.unit_code == "hw-jk"
    assert (d.deadline_class, d.deadline_source) == ("2wh", "rule")
    assert d.rule_name.startswith("经开区环卫一体化")
    # The same garbage in 鹤城区 goes to that area's sanitation with the class deadline.
    d = await suggest(session, await facts_at(session, "06010", "event", grid_in("HC")))
    assert (d.unit_code, d.deadline_class, d.target) == ("hw-hc", "4wh", "area_sanitation")


async def test_shop_front_business_in_gx_goes_to_the_gx_bureau(session: AsyncSession) -> None:
    facts = await facts_at(session, "09005", "event", grid_in("GX"))
    d = await suggest(session, facts)
    assert (d.unit_code, d.target, d.deadline_class) == ("cgj-gx", "area_urban_management", "1wd")


async def test_street_specific_rule(session: AsyncSession) -> None:
    facts = CaseFacts("09001", "event", "HC", "431202001")
    assert (await suggest(session, facts)).unit_code == "jd-431202001"
    assert (await suggest(session, CaseFacts("09001", "event", "HC", "431202002"))).unit_code == "cgj-hc"


async def test_an_event_without_a_rule_goes_to_its_street_office(session: AsyncSession) -> None:
    facts = await facts_at(session, "06034", "event", grid_in("ZF", 17))
    d = await suggest(session, facts)
    assert d.unit_code == f"jd-{facts.street_code}"
    assert d.rule_name == "属地兜底 → 所在街道（乡镇）"
    assert (d.deadline_class, d.deadline_source) == ("5wd", "matter_class")
    assert len(d.trace) == len(DEMO_RULES)
    assert d.unit_name and d.unit_name.endswith(("办事处", "人民政府"))


async def test_an_inactive_unit_falls_through_to_the_next_rule(session: AsyncSession) -> None:
    facts = await facts_at(session, "01001", "component", component_in("01001", "JK"))
    await session.execute(text("UPDATE units SET active = false WHERE code = 'water'"))
    d = await suggest(session, facts)
    assert d.unit_code == f"jd-{facts.street_code}"
    skipped = next(t for t in d.trace if t["name"] == "供水井盖 → 自来水公司")
    assert skipped["matched"] is False
    assert skipped["reason"] == "all conditions hold: class 01001; but unit water is inactive"
    assert d.deadline_class == "urgent"


async def test_outside_the_grids_no_unit(session: AsyncSession) -> None:
    d = await suggest(session, CaseFacts("06034", "event", None, None))
    assert d.unit_code is None and d.unit_id is None
    assert "street_office needs a street and the case has none" in d.reason
    assert d.deadline_class == "5wd"


async def test_facts_of_case(session: AsyncSession) -> None:
    facts = await facts_at(session, "06010", "event", grid_in("JK", 3))
    case_id = await session.scalar(
        text("""
        WITH r AS (
            INSERT INTO reports (source, kind, category, geom)
            VALUES ('hotline', 'event', '06010', ST_SetSRID(ST_MakePoint(110.0, 27.5), 4490)) RETURNING id)
        INSERT INTO cases (number, status, report_id, kind, category, grid_code, community_code,
                           street_code, area_code, geom)
        SELECT 'RULES-TEST-1', 'filed', r.id, 'event', '06010', :grid, :community, :street, :area,
               ST_SetSRID(ST_MakePoint(110.0, 27.5), 4490)
        FROM r RETURNING id"""),
        {
            "grid": facts.grid_code,
            "community": facts.community_code,
            "street": facts.street_code,
            "area": "JK",
        },
    )
    # The facts carry the case's point now (for rules on responsibility areas).
    assert await facts_of_case(session, case_id) == replace(facts, lon=110.0, lat=27.5)
    assert (await suggest(session, await facts_of_case(session, case_id))).unit_code == "hw-jk"
    with pytest.raises(NotFound):
        await facts_of_case(session, -1)
