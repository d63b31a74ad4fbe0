"""Dispatch rules (派遣规则): which unit a case goes to, with which deadline class and priority.

Routing is data (table ``dispatch_rules``), not code: an ordered list of rules per rule set,
the first enabled rule whose conditions all hold wins. A condition lists values, any of which
may hold (OR); all the conditions of a rule must hold (AND):

    {"classes": ["01001", "01025"]}     matter class, exact 5-digit code
    {"majors": ["06"]}                  matter class major (2 digits)
    {"kind": "component"}               component | event (or a list of them)
    {"areas": ["HC", "JK"]}             management area of the case
    {"streets": ["431202001"]}          street (街道/乡镇) of the case
    {"communities": ["431202001003"]}   community (社区/村) of the case
    {"grids": ["431202001003012"]}      unit grid (单元网格) of the case
    {"inside_area_kind": "park"}        the case lies in a responsibility area of that kind
                                        (or of any listed kind) that applies to its class
    {"component_owner": true}           a component matter whose reported or snapped
                                        component has a registered owner
    {"time_of_day": {"from": "22:00", "to": "06:00"}}
                                        decision time (Asia/Shanghai) in [from, to); may wrap
                                        midnight
    {"day_type": "rest_day"}            working_day | rest_day on the working calendar

A rule names a unit (``unit_code``) or a role resolved from the case (``target``, see
``TARGETS``): the street office, the area's urban management or sanitation, the owner of the
responsibility area the rule's ``inside_area_kind`` found (``area_owner``; the smallest when
several hold the point), or the component's owner (``component_owner``). The last rule of a
set is a catch-all (``{}``) to the street office of the location (属地兜底).

``evaluate`` is pure and never raises: it answers a ``Decision`` with the trace of every rule
tried, which the dispatch stores on the case event. What it needs from the database (the
areas at the point, the component's owner, the day type) is resolved beforehand into
``CaseFacts`` by ``suggest``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, time
from typing import Any, Final

import shapely
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.deadlines import TZ, WorkCalendar
from geo import responsibility
from geo.errors import NotFound
from geo.responsibility import AreaHit

KINDS: Final = ("component", "event")
PRIORITIES: Final = range(1, 6)  # 1 highest … 5 lowest

_AREA_KINDS = "|".join(responsibility.KINDS)
DAY_TYPES: Final = ("working_day", "rest_day")
# A value of each list condition must look like this; a list of them is the condition.
_SHAPES: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "classes": (re.compile(r"^[0-9]{5}$"), "a 5-digit matter class code"),
    "majors": (re.compile(r"^[0-9]{2}$"), "a 2-digit major class code"),
    "kind": (re.compile(r"^(component|event)$"), "'component' or 'event'"),
    "areas": (re.compile(r"^[A-Z][A-Z0-9]*$"), "a management area code such as 'HC'"),
    "streets": (re.compile(r"^[0-9]{9}$"), "a 9-digit street code"),
    "communities": (re.compile(r"^[0-9]{12}$"), "a 12-digit community code"),
    "grids": (re.compile(r"^[0-9]{15}$"), "a 15-digit unit grid code"),
    "inside_area_kind": (
        re.compile(rf"^({_AREA_KINDS})$"),
        f"a responsibility area kind ({', '.join(responsibility.KINDS)})",
    ),
    "day_type": (re.compile(r"^(working_day|rest_day)$"), "'working_day' or 'rest_day'"),
}
_SCALAR_OK: Final = frozenset({"kind", "inside_area_kind", "day_type"})  # a string stands for [it]
# Conditions of another shape, checked by ``_special_problems``.
_SPECIAL: Final = ("component_owner", "time_of_day")
# The order conditions are checked in (and reported in a trace).
MATCH_KEYS: Final = (
    "classes",
    "majors",
    "kind",
    "areas",
    "streets",
    "communities",
    "grids",
    "inside_area_kind",
    "component_owner",
    "time_of_day",
    "day_type",
)
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


@dataclass(frozen=True)
class CaseFacts:
    """What the rules may look at.

    The first fields come with the case; the others are resolved from the database by
    ``suggest`` when a rule needs them (None: not looked up), so that ``evaluate`` stays pure:
    ``at`` the decision time, ``areas`` the smallest responsibility area of each kind the
    rules mention holding the point and applying to the class, ``component_owner`` the unit
    code of the component's owner (``component_registered``: whether the code is in the
    register at all), ``is_workday`` the day type of ``at``.
    """

    category: str
    kind: str
    area_code: str | None
    street_code: str | None
    community_code: str | None = None
    grid_code: str | None = None
    component_code: str | None = None
    lon: float | None = None  # CGCS2000
    lat: float | None = None
    at: datetime | None = None
    areas: Mapping[str, AreaHit] | None = None
    component_owner: str | None = None
    component_registered: bool | None = None
    is_workday: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (the time as ISO 8601 in Asia/Shanghai)."""
        out = asdict(self)
        if self.at is not None:
            out["at"] = _local(self.at).isoformat()
        return out


def _local(at: datetime) -> datetime:
    """``at`` in Asia/Shanghai; a naive time is taken as local already."""
    return at.replace(tzinfo=TZ) if at.tzinfo is None else at.astimezone(TZ)


def _area_hit(match: Mapping[str, Any], facts: CaseFacts) -> AreaHit | None:
    """The smallest area of the rule's kinds holding the case, if any."""
    hits = [facts.areas[k] for k in _values(match, "inside_area_kind") if facts.areas and k in facts.areas]
    return min(hits, key=lambda h: (h.area_m2, h.id)) if hits else None


# Target roles: the unit code a role means for a case (given the rule's match), or None when
# the case lacks what the role needs.
TARGETS: Final[dict[str, tuple[str, Callable[[CaseFacts, Mapping[str, Any]], str | None]]]] = {
    "street_office": ("a street", lambda f, m: f"jd-{f.street_code}" if f.street_code else None),
    "area_urban_management": (
        "a management area",
        lambda f, m: f"cgj-{f.area_code.lower()}" if f.area_code else None,
    ),
    "area_sanitation": (
        "a management area",
        lambda f, m: f"hw-{f.area_code.lower()}" if f.area_code else None,
    ),
    "area_owner": (
        "a responsibility area of the rule's kind",
        lambda f, m: getattr(_area_hit(m, f), "owner", None) if "inside_area_kind" in m else None,
    ),
    "component_owner": ("a component with a registered owner", lambda f, m: f.component_owner),
}


@dataclass
class Rule:
    """One row of ``dispatch_rules``, with its unit as a code."""

    id: int | None
    position: int
    name: str
    match: dict[str, Any]
    unit_code: str | None
    target: str | None
    deadline_class: str | None
    priority: int
    enabled: bool = True


@dataclass(frozen=True)
class Decision:
    """The outcome of the rules for one case: the unit (None when no rule gave one) and why.

    ``unit_id``/``unit_name``, ``rule_set`` and the deadline class default are filled by
    ``suggest``; ``evaluate`` alone leaves them None.
    """

    rule_id: int | None
    rule_name: str | None
    unit_code: str | None
    deadline_class: str | None
    priority: int | None
    trace: list[dict[str, Any]]
    reason: str
    target: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    unit_id: int | None = None
    unit_name: str | None = None
    deadline_source: str | None = None  # "rule" | "matter_class"
    rule_set: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, keyed as the fields: the stored rule trace and the suggestion's body."""
        return {
            "rule_set": self.rule_set,
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "unit_code": self.unit_code,
            "unit_id": self.unit_id,
            "unit_name": self.unit_name,
            "target": self.target,
            "deadline_class": self.deadline_class,
            "deadline_source": self.deadline_source,
            "priority": self.priority,
            "reason": self.reason,
            "facts": dict(self.facts),
            "trace": [dict(t) for t in self.trace],
        }


# --- validation ---------------------------------------------------------------------------------


def _values(match: Mapping[str, Any], key: str) -> list[str]:
    value = match[key]
    return [value] if key in _SCALAR_OK and isinstance(value, str) else list(value)


def _special_problems(match: Mapping[str, Any]) -> list[str]:
    problems = []
    if "component_owner" in match and match["component_owner"] is not True:
        problems.append("component_owner must be true")
    if "time_of_day" in match:
        window = match["time_of_day"]
        if not isinstance(window, Mapping) or set(window) != {"from", "to"}:
            problems.append('time_of_day must be {"from": "HH:MM", "to": "HH:MM"}')
        else:
            bad = [k for k in ("from", "to") if not (isinstance(window[k], str) and _HHMM.match(window[k]))]
            problems += [f"time_of_day.{k}: {window[k]!r} is not a time HH:MM (00:00–23:59)" for k in bad]
            if not bad and window["from"] == window["to"]:
                problems.append("time_of_day: from and to are equal; leave the condition out for all day")
    return problems


def validate_match(match: Any) -> list[str]:
    """The problems of a rule's ``match`` (unknown keys, wrong shapes); empty when it is valid."""
    if not isinstance(match, Mapping):
        return [f"match must be an object, not {type(match).__name__}"]
    problems = [
        f"unknown condition {key!r} (known: {', '.join(MATCH_KEYS)})"
        for key in match
        if key not in MATCH_KEYS
    ]
    for key, (pattern, shape) in _SHAPES.items():
        if key not in match:
            continue
        value = match[key]
        if key in _SCALAR_OK and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            problems.append(f"{key} must be a non-empty list")
            continue
        problems += [
            f"{key}: {v!r} is not {shape}" for v in value if not (isinstance(v, str) and pattern.match(v))
        ]
    problems += _special_problems(match)
    # Both hold only for a class inside a listed major: a disjoint pair never matches.
    if (
        not problems
        and "classes" in match
        and "majors" in match
        and not any(c[:2] in match["majors"] for c in match["classes"])
    ):
        problems.append(f"classes {match['classes']} are all outside majors {match['majors']}: never matches")
    kinds = _values(match, "kind") if not problems and "kind" in match else list(KINDS)
    if "component_owner" in match and "component" not in kinds:
        problems.append(f"component_owner holds for component matters only, not kind {kinds}: never matches")
    return problems


def validate_rule(rule: Rule) -> list[str]:
    """The problems of a whole rule: its match, its result and its priority."""
    problems = validate_match(rule.match)
    if rule.unit_code is None and rule.target is None:
        problems.append("a rule needs a unit or a target")
    if rule.unit_code is not None and rule.target is not None:
        problems.append("a rule names a unit or a target, not both")
    if rule.target is not None and rule.target not in TARGETS:
        problems.append(f"unknown target {rule.target!r} (known: {', '.join(TARGETS)})")
    if (
        rule.target == "area_owner"
        and isinstance(rule.match, Mapping)
        and "inside_area_kind" not in rule.match
    ):
        problems.append("target area_owner needs an inside_area_kind condition (which area's owner)")
    if rule.priority not in PRIORITIES:
        problems.append(f"priority {rule.priority} is not 1 … 5")
    return problems


# --- evaluation ---------------------------------------------------------------------------------


def _component_problem(facts: CaseFacts) -> str | None:
    """Why the case has no component owner to send it to; None when it has one."""
    code = facts.component_code
    if not code:
        return "no component reported or snapped for the case"
    if facts.component_registered is False:
        return f"component {code} is not in the component register"
    if facts.component_owner is None:
        if facts.component_registered is None:
            return f"the owner of component {code} was not looked up"
        return f"component {code} has no registered owner"
    return None


def _window(match: Mapping[str, Any]) -> tuple[time, time]:
    window = match["time_of_day"]
    return time.fromisoformat(window["from"]), time.fromisoformat(window["to"])


def _check(match: Mapping[str, Any], facts: CaseFacts) -> tuple[bool, str]:
    """Whether all conditions hold; the first failing condition, or the list of those holding."""
    held: list[str] = []
    category = facts.category
    for key in MATCH_KEYS:
        if key not in match:
            continue
        values = _values(match, key) if key not in _SPECIAL else []
        if key == "classes":
            if category not in values:
                return False, f"class {category} not in classes {values}"
            held.append(f"class {category}")
        elif key == "majors":
            if category[:2] not in values:
                return False, f"class {category} not in majors {values}"
            held.append(f"major {category[:2]}")
        elif key == "kind":
            if facts.kind not in values:
                return False, f"kind {facts.kind} not in {values}"
            held.append(f"kind {facts.kind}")
        elif key in ("areas", "streets", "communities", "grids"):
            noun, value = {
                "areas": ("area", facts.area_code),
                "streets": ("street", facts.street_code),
                "communities": ("community", facts.community_code),
                "grids": ("grid", facts.grid_code),
            }[key]
            if value is None:
                what = "management area" if key == "areas" else noun
                return False, f"the case has no {what} (outside the grids), rule needs {values}"
            if value not in values:
                return False, f"{noun} {value} not in {key} {values}"
            held.append(f"{noun} {value}")
        elif key == "inside_area_kind":
            names = "/".join(responsibility.KINDS.get(v, v) for v in values)
            if facts.lon is None or facts.lat is None:
                return False, f"the case has no location, rule needs inside {names}"
            if facts.areas is None:
                return (
                    False,
                    f"the responsibility areas at the case were not looked up, rule needs inside {names}",
                )
            hit = _area_hit(match, facts)
            if hit is None:
                return False, f"not inside any {names} that applies to class {category}"
            held.append(
                f"inside {responsibility.KINDS.get(hit.kind, hit.kind)} {hit.name} (owner {hit.owner})"
            )
        elif key == "component_owner":
            if facts.kind != "component":
                return False, f"kind {facts.kind}: only a component matter has a component owner"
            missing = _component_problem(facts)
            if missing:
                return False, missing
            held.append(f"component {facts.component_code} owned by {facts.component_owner}")
        elif key == "time_of_day":
            start, end = _window(match)
            span = f"{start:%H:%M}–{end:%H:%M}"
            if facts.at is None:
                return False, f"the decision time is unknown, rule needs {span}"
            now = _local(facts.at).time().replace(tzinfo=None)
            inside = start <= now < end if start < end else (now >= start or now < end)  # wraps midnight
            if not inside:
                return False, f"time {now:%H:%M} not in {span}"
            held.append(f"time {now:%H:%M} in {span}")
        elif key == "day_type":
            if facts.is_workday is None:
                return False, f"the day type is unknown (no working calendar looked up), rule needs {values}"
            day_type = "working_day" if facts.is_workday else "rest_day"
            day = f"{_local(facts.at).date()} " if facts.at is not None else ""
            said = f"{day}is a {day_type.replace('_', ' ')}".strip()
            if day_type not in values:
                return False, f"{said}, rule needs {values}"
            held.append(said)
    return True, ("all conditions hold: " + ", ".join(held)) if held else "catch-all (no conditions)"


def evaluate(
    rules: Sequence[Rule], facts: CaseFacts, active_units: Mapping[str, bool] | None = None
) -> Decision:
    """The first enabled rule, in ``position`` order, whose conditions hold and whose unit is usable.

    ``active_units`` (unit code → active), when given, makes a rule whose unit does not exist
    or is inactive fall through to the next one. Pure; never raises.
    """
    trace: list[dict[str, Any]] = []
    facts_dict = facts.as_dict()
    for rule in sorted(rules, key=lambda r: r.position):
        entry: dict[str, Any] = {"rule": rule.id, "name": rule.name, "matched": False}
        trace.append(entry)
        if not rule.enabled:
            entry["reason"] = "rule disabled"
            continue
        problems = validate_rule(rule)
        if problems:
            entry["reason"] = "invalid rule: " + "; ".join(problems)
            continue
        holds, reason = _check(rule.match, facts)
        if not holds:
            entry["reason"] = reason
            continue
        if rule.unit_code is not None:
            unit = rule.unit_code
        else:
            needs, resolve = TARGETS[rule.target]  # type: ignore[index]
            unit = resolve(facts, rule.match)
            if unit is None:
                why = _component_problem(facts) if rule.target == "component_owner" else None
                entry["reason"] = f"{reason}; but " + (
                    why or f"{rule.target} needs {needs} and the case has none"
                )
                continue
            if rule.target == "component_owner" and "component_owner" not in rule.match:
                reason += f"; component {facts.component_code} owned by {unit}"  # the why of the unit
        if active_units is not None and not active_units.get(unit, False):
            why = "does not exist" if unit not in active_units else "is inactive"
            entry["reason"] = f"{reason}; but unit {unit} {why}"
            continue
        entry.update(matched=True, reason=reason, unit=unit)
        return Decision(
            rule_id=rule.id,
            rule_name=rule.name,
            unit_code=unit,
            deadline_class=rule.deadline_class,
            priority=rule.priority,
            trace=trace,
            reason=f"{rule.name}: {reason}",
            target=rule.target,
            facts=facts_dict,
            deadline_source="rule" if rule.deadline_class else None,
        )
    reason = f"no rule gave a unit ({len(trace)} tried)"
    if trace:
        reason += f"; last: {trace[-1]['reason']}"
    return Decision(None, None, None, None, None, trace, reason, facts=facts_dict)


# --- storage ------------------------------------------------------------------------------------

_RULES_SQL = text("""
SELECT r.id, r.position, r.name, r.match, u.code AS unit_code, r.target, r.deadline_class,
       r.priority, r.enabled
FROM dispatch_rules r LEFT JOIN units u ON u.id = r.unit_id
WHERE r.rule_set = :rule_set
ORDER BY r.position
""")


async def active_rule_set(session: AsyncSession) -> int:
    """The version of the active rule set."""
    version = await session.scalar(text("SELECT version FROM dispatch_rule_sets WHERE active"))
    return 1 if version is None else version


async def load_rules(session: AsyncSession, rule_set: int | None = None) -> list[Rule]:
    """The rules of ``rule_set`` (default: the active set) in position order, disabled ones included."""
    if rule_set is None:
        rule_set = await active_rule_set(session)
    rows = await session.execute(_RULES_SQL, {"rule_set": rule_set})
    return [
        Rule(
            r.id, r.position, r.name, r.match, r.unit_code, r.target, r.deadline_class, r.priority, r.enabled
        )
        for r in rows
    ]


# The component's owner and the calendar entry of the decision day, in one round trip.
_LOOKUP = text("""
SELECT c.registered, c.owner, d.kind AS day_kind
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT true AS registered, u.code AS owner
    FROM components c LEFT JOIN units u ON u.id = c.owner_unit_id WHERE c.code = :code
) AS c ON true
LEFT JOIN calendar_days d ON d.day = :day
""")


async def resolve_facts(session: AsyncSession, facts: CaseFacts, rules: Sequence[Rule]) -> CaseFacts:
    """``facts`` with what the enabled ``rules`` need looked up, where the facts lack it.

    The decision time (now), the areas of the kinds the rules name at the case's point (one
    query), the component's owner and the day type of the decision day (one more): nothing
    is looked up that no rule reads.
    """
    live = [r.match for r in rules if r.enabled and not validate_match(r.match)]
    targets = {r.target for r in rules if r.enabled}
    at = facts.at or datetime.now(UTC)
    changes: dict[str, Any] = {"at": at}
    kinds = {k for m in live if "inside_area_kind" in m for k in _values(m, "inside_area_kind")}
    if kinds and facts.areas is None and facts.lon is not None and facts.lat is not None:
        changes["areas"] = await responsibility.owners_at(
            session, facts.lon, facts.lat, kinds, facts.category
        )
    code = (facts.component_code or "").strip() or None
    wants_owner = any("component_owner" in m for m in live) or "component_owner" in targets
    owner_needed = wants_owner and code is not None and facts.component_registered is None
    day = _local(at).date()
    day_needed = facts.is_workday is None and any("day_type" in m for m in live)
    if owner_needed or day_needed:
        row = (await session.execute(_LOOKUP, {"code": code if owner_needed else None, "day": day})).one()
        if owner_needed:
            changes["component_registered"] = bool(row.registered)
            changes["component_owner"] = facts.component_owner or row.owner
        if day_needed:
            # An administrator's entry for a day decides only that day: the calendar of that
            # one entry answers as the whole calendar would.
            entry = {row.day_kind: {day}} if row.day_kind else {}
            calendar = WorkCalendar(holidays=entry.get("holiday", ()), workdays=entry.get("workday", ()))
            changes["is_workday"] = calendar.is_workday(day)
    return replace(facts, **changes)


async def suggest(session: AsyncSession, facts: CaseFacts, rule_set: int | None = None) -> Decision:
    """The dispatch suggestion for a case: the rules, checked against the units as they are now.

    What the rules need and ``facts`` lack is looked up first (``resolve_facts``; the decision
    time is now unless ``facts.at`` says otherwise). A rule whose unit is missing or inactive
    falls through to the next one (its trace says so); a rule without a deadline class takes
    the matter class's default.
    """
    if rule_set is None:
        rule_set = await active_rule_set(session)
    rules = await load_rules(session, rule_set)
    facts = await resolve_facts(session, facts, rules)
    units = {r.code: r for r in await session.execute(text("SELECT id, code, name, active FROM units"))}
    decision = evaluate(rules, facts, {code: u.active for code, u in units.items()})
    if not rules:
        decision = replace(decision, reason=f"rule set {rule_set} has no rules")
    unit = units.get(decision.unit_code) if decision.unit_code else None
    deadline_class, source = decision.deadline_class, decision.deadline_source
    if deadline_class is None:
        deadline_class = await session.scalar(
            text("SELECT deadline_class FROM matter_classes WHERE code = :c"), {"c": facts.category}
        )
        source = "matter_class" if deadline_class else None
    return replace(
        decision,
        unit_id=unit.id if unit else None,
        unit_name=unit.name if unit else None,
        deadline_class=deadline_class,
        deadline_source=source,
        rule_set=rule_set,
    )


def _clean(value: str | None) -> str | None:
    """char(n) columns come back padded."""
    return (value.strip() or None) if value is not None else None


def _point(row: Any) -> tuple[float | None, float | None]:
    """The CGCS2000 lon/lat of a case row: its ``lon``/``lat`` columns, else its ``geom``."""
    lon, lat = getattr(row, "lon", None), getattr(row, "lat", None)
    if lon is not None and lat is not None:
        return float(lon), float(lat)
    geom = getattr(row, "geom", None)
    if geom is None:
        return None, None
    point = shapely.from_wkb(geom)  # asyncpg hands PostGIS geometry over as hex EWKB
    return (point.x, point.y) if not point.is_empty else (None, None)


def case_facts(row: Any) -> CaseFacts:
    """The facts of a case row (``SELECT * FROM cases`` or with ``lon``/``lat`` columns)."""
    lon, lat = _point(row)
    return CaseFacts(
        category=row.category.strip(),
        kind=row.kind,
        area_code=row.area_code,
        street_code=_clean(row.street_code),
        community_code=_clean(row.community_code),
        grid_code=_clean(row.grid_code),
        component_code=_clean(row.component_code),
        lon=lon,
        lat=lat,
    )


async def facts_for_case_row(session: AsyncSession, row: Any) -> CaseFacts:
    """The facts of a case row; the point is read from the database when the row lacks it."""
    facts = case_facts(row)
    if facts.lon is None and getattr(row, "id", None) is not None:
        point = (
            await session.execute(
                text("SELECT ST_X(geom) AS lon, ST_Y(geom) AS lat FROM cases WHERE id = :id"), {"id": row.id}
            )
        ).first()
        if point is not None:
            facts = replace(facts, lon=point.lon, lat=point.lat)
    return facts


async def facts_of_case(session: AsyncSession, case_id: int) -> CaseFacts:
    """The facts of a stored case (its class and where it lies)."""
    row = (
        await session.execute(
            text(
                "SELECT category, kind, area_code, street_code, community_code, grid_code, component_code, "
                "ST_X(geom) AS lon, ST_Y(geom) AS lat FROM cases WHERE id = :id"
            ),
            {"id": case_id},
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"case {case_id} does not exist")
    return case_facts(row)
