"""Dispatch rules (派遣规则): which unit a case goes to, with which deadline class and priority.

Routing is data (table ``dispatch_rules``), not code: an ordered list of rules per rule set,
the first enabled rule whose conditions all hold wins. A condition lists values, any of which
may hold (OR); all the conditions of a rule must hold (AND):

    {"classes": ["01001", "01025"]}     matter class, exact 5-digit code
    {"majors": ["06"]}                  matter class major (2 digits)
    {"kind": "component"}               component | event (or a list of them)
    {"areas": ["HC", "JK"]}             management area of the case
    {"streets": ["431202001"]}          street (街道/乡镇) of the case

A rule names a unit (``unit_code``) or a role resolved from the case's location
(``target``, see ``TARGETS``). The last rule of a set is a catch-all (``{}``) to the street
office of the location (属地兜底). ``evaluate`` is pure and never raises: it answers a
``Decision`` with the trace of every rule tried, which the dispatch stores on the case event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.errors import NotFound

KINDS: Final = ("component", "event")
PRIORITIES: Final = range(1, 6)  # 1 highest … 5 lowest

# A value of each condition must look like this; a list of them is the condition.
_SHAPES: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "classes": (re.compile(r"^[0-9]{5}$"), "a 5-digit matter class code"),
    "majors": (re.compile(r"^[0-9]{2}$"), "a 2-digit major class code"),
    "kind": (re.compile(r"^(component|event)$"), "'component' or 'event'"),
    "areas": (re.compile(r"^[A-Z][A-Z0-9]*$"), "a management area code such as 'HC'"),
    "streets": (re.compile(r"^[0-9]{9}$"), "a 9-digit street code"),
}
MATCH_KEYS: Final = tuple(_SHAPES)


@dataclass(frozen=True)
class CaseFacts:
    """What the rules may look at; the extra fields are for later rule kinds."""

    category: str
    kind: str
    area_code: str | None
    street_code: str | None
    community_code: str | None = None
    grid_code: str | None = None
    component_code: str | None = None


# Target roles: the unit code a role means for a case, or None when the case lacks the place.
TARGETS: Final[dict[str, tuple[str, Callable[[CaseFacts], str | None]]]] = {
    "street_office": ("a street", lambda f: f"jd-{f.street_code}" if f.street_code else None),
    "area_urban_management": (
        "a management area",
        lambda f: f"cgj-{f.area_code.lower()}" if f.area_code else None,
    ),
    "area_sanitation": ("a management area", lambda f: f"hw-{f.area_code.lower()}" if f.area_code else None),
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
    return [value] if key == "kind" and isinstance(value, str) else list(value)


def validate_match(match: Any) -> list[str]:
    """The problems of a rule's ``match`` (unknown keys, wrong shapes); empty when it is valid."""
    if not isinstance(match, Mapping):
        return [f"match must be an object, not {type(match).__name__}"]
    problems = [
        f"unknown condition {key!r} (known: {', '.join(MATCH_KEYS)})" for key in match if key not in _SHAPES
    ]
    for key, (pattern, shape) in _SHAPES.items():
        if key not in match:
            continue
        value = match[key]
        if key == "kind" and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            problems.append(f"{key} must be a non-empty list")
            continue
        problems += [
            f"{key}: {v!r} is not {shape}" for v in value if not (isinstance(v, str) and pattern.match(v))
        ]
    # Both hold only for a class inside a listed major: a disjoint pair never matches.
    if (
        not problems
        and "classes" in match
        and "majors" in match
        and not any(c[:2] in match["majors"] for c in match["classes"])
    ):
        problems.append(f"classes {match['classes']} are all outside majors {match['majors']}: never matches")
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
    if rule.priority not in PRIORITIES:
        problems.append(f"priority {rule.priority} is not 1 … 5")
    return problems


# --- evaluation ---------------------------------------------------------------------------------


def _check(match: Mapping[str, Any], facts: CaseFacts) -> tuple[bool, str]:
    """Whether all conditions hold; the first failing condition, or the list of those holding."""
    held: list[str] = []
    category = facts.category
    for key in MATCH_KEYS:
        if key not in match:
            continue
        values = _values(match, key)
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
        elif key == "areas":
            if facts.area_code is None:
                return False, f"the case has no management area (outside the grids), rule needs {values}"
            if facts.area_code not in values:
                return False, f"area {facts.area_code} not in areas {values}"
            held.append(f"area {facts.area_code}")
        elif key == "streets":
            if facts.street_code is None:
                return False, f"the case has no street (outside the grids), rule needs {values}"
            if facts.street_code not in values:
                return False, f"street {facts.street_code} not in streets {values}"
            held.append(f"street {facts.street_code}")
    return True, ("all conditions hold: " + ", ".join(held)) if held else "catch-all (no conditions)"


def evaluate(
    rules: Sequence[Rule], facts: CaseFacts, active_units: Mapping[str, bool] | None = None
) -> Decision:
    """The first enabled rule, in ``position`` order, whose conditions hold and whose unit is usable.

    ``active_units`` (unit code → active), when given, makes a rule whose unit does not exist
    or is inactive fall through to the next one. Pure; never raises.
    """
    trace: list[dict[str, Any]] = []
    facts_dict = asdict(facts)
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
            unit = resolve(facts)
            if unit is None:
                entry["reason"] = f"{reason}; but {rule.target} needs {needs} and the case has none"
                continue
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


async def suggest(session: AsyncSession, facts: CaseFacts, rule_set: int | None = None) -> Decision:
    """The dispatch suggestion for a case: the rules, checked against the units as they are now.

    A rule whose unit is missing or inactive falls through to the next one (its trace says
    so); a rule without a deadline class takes the matter class's default.
    """
    if rule_set is None:
        rule_set = await active_rule_set(session)
    rules = await load_rules(session, rule_set)
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


async def facts_of_case(session: AsyncSession, case_id: int) -> CaseFacts:
    """The facts of a stored case (its class and where it lies)."""
    row = (
        await session.execute(
            text(
                "SELECT category, kind, area_code, street_code, community_code, grid_code, component_code "
                "FROM cases WHERE id = :id"
            ),
            {"id": case_id},
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"case {case_id} does not exist")

    def clean(value: str | None) -> str | None:  # char(n) columns come back padded
        return (value.strip() or None) if value is not None else None

    return CaseFacts(
        category=row.category.strip(),
        kind=row.kind,
        area_code=row.area_code,
        street_code=clean(row.street_code),
        community_code=clean(row.community_code),
        grid_code=clean(row.grid_code),
        component_code=clean(row.component_code),
    )
