"""How dispatch rules do on real cases: replaying a rule set (simulation) and its record (quality).

Simulation (规则模拟) answers "had these rules been in force, where would that period's cases
have gone?": every case filed in [from, to) that was dispatched, by the rules or by hand, is
routed again with ``cases.rules.evaluate`` and compared with the unit it first went to (the
unit of its first ``dispatch`` event), as of the time of that dispatch.

What ``cases.rules.resolve_facts`` looks up per case at dispatch (the responsibility areas at
the point, the component's owner, the day type) is fetched here for all cases at once: ONE
query (the component register joined, time-of-day slots and day types computed in SQL) and one
STRtree match of the points against the areas. ``evaluate`` then runs once per distinct
combination of what the rules read (``Router``): a year of cases holds far fewer combinations
than cases. A rule set with a condition or target this module does not know falls back to
``resolve_facts`` per case: correct, but slow (the result says ``"method": "per_case"``).

Quality (规则质量) judges each rule by the cases it routed first (the rule in the first
``dispatch`` event's trace): returns to the command center (回退) with their reason codes,
re-dispatches, and handling deadlines missed. Rules whose return rate stands out are listed
first, so that the boundary between two units that failed can be found and redrawn.
"""

from __future__ import annotations

import bisect
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Final

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.calendar_days import load_calendar
from cases.deadlines import TZ
from cases.lifecycle import RETURN_REASONS
from cases.rule_sets import version_meta
from cases.rules import CaseFacts, Rule, evaluate, load_rules, resolve_facts, validate_rule
from geo.errors import InvalidInput
from geo.pg import raw_connection
from geo.responsibility import AreaHit

SAMPLES: Final = 3  # case numbers shown per move, to look at before believing a figure

# The facts each condition and target reads, as columns of ``_CASES_SQL`` (category and kind
# are always read). Conditions and targets not listed send the set to the per-case path.
_CONDITION_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "classes": (),
    "majors": (),
    "kind": (),
    "areas": ("area_code",),
    "streets": ("street_code",),
    "communities": ("community_code",),
    "grids": ("grid_code",),
    "inside_area_kind": ("area_ids",),  # not a column: matched in Python
    "component_owner": ("component_registered", "component_owner"),
    "time_of_day": ("time_slot",),
    "day_type": ("workday", "far_day"),
}
_TARGET_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "street_office": ("street_code",),
    "area_urban_management": ("area_code",),
    "area_sanitation": ("area_code",),
    "area_owner": ("area_ids",),
    "component_owner": ("component_registered", "component_owner"),
}
_CLASS = re.compile(r"^[0-9]{5}$")
_MAJOR = re.compile(r"^[0-9]{2}$")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# Day types are looked up in SQL for dispatches up to this long after the period; later
# ones (hardly any) keep their date in the key and are looked up in Python.
_DAYS_AFTER: Final = timedelta(days=730)

Decided = tuple[int | None, str | None]  # (index of the rule in position order, unit code)


def _aware(moment: datetime) -> datetime:
    """Naive times are Asia/Shanghai wall time, as everywhere in the API."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=TZ)


def _period(start: datetime | None, end: datetime | None) -> tuple[datetime | None, datetime | None]:
    start, end = (_aware(start) if start else None), (_aware(end) if end else None)
    if start is not None and end is not None and start >= end:
        raise InvalidInput(
            f"the period is empty: from {start.isoformat()} is not before to {end.isoformat()}",
            errors=[{"field": "to", "message": "must be after from"}],
        )
    return start, end


# --- simulation -----------------------------------------------------------------------------

# The first dispatch of each case filed in [$1, $2) (the one no earlier dispatch precedes; the
# planner picks hash or index joins as the period and the history grow): the unit, whether by
# hand, its time (the decision time) and the case's facts, with what the rules read of the
# component register, the slot of the time of day between the rules' time_of_day boundaries,
# and the day type (rest days given as a list). Only the unit leaves the payload: the stored
# trace stays in the database. Responsibility areas are matched in Python (STRtree): a GiST
# probe per case cost more than the rest of the query together.
_CASES_SQL = """
SELECT c.number, e.payload->>'unit' AS unit,
       jsonb_typeof(e.payload->'rule') IS DISTINCT FROM 'object' AS by_hand,
       c.category::text AS category, c.kind, {area_code} AS area_code, {street_code} AS street_code,
       {community_code} AS community_code, {grid_code} AS grid_code,
       {component_code} AS component_code, {lon} AS lon, {lat} AS lat, {at} AS at,
       {component_registered} AS component_registered, {component_owner} AS component_owner,
       {time_slot} AS time_slot, {workday} AS workday, {far_day} AS far_day
FROM cases c
JOIN case_events e ON e.case_id = c.id AND e.action = 'dispatch'
{joins}
WHERE c.filed_at >= $1 AND c.filed_at < $2
  AND NOT EXISTS (
      SELECT 1 FROM case_events p WHERE p.case_id = c.id AND p.action = 'dispatch' AND p.id < e.id)
"""
# The facts a rule set may not read: NULL unless it does (fewer values to send and decode).
_FACTS: Final = {
    "area_code": "c.area_code",
    "street_code": "nullif(btrim(c.street_code), '')",
    "community_code": "nullif(btrim(c.community_code), '')",
    "grid_code": "nullif(c.grid_code::text, '')",
    "component_code": "nullif(btrim(c.component_code::text), '')",
    "lon": "ST_X(c.geom)",
    "lat": "ST_Y(c.geom)",
    "at": "e.at",
}
_COMPONENT_JOIN = """
LEFT JOIN components cp ON cp.code = c.component_code
LEFT JOIN units cu ON cu.id = cp.owner_unit_id"""
# The areas the rules' kinds name, as ``responsibility.owners_at`` sees them.
_AREAS_SQL = """
SELECT a.id, a.name, a.kind, u.code AS owner, ST_Area(a.geom::geography) AS area_m2,
       a.matter_classes, ST_AsBinary(a.geom) AS wkb
FROM responsibility_areas a JOIN units u ON u.id = a.owner_unit_id
WHERE a.kind = ANY(:kinds)
"""


@dataclass(frozen=True)
class _Area:
    id: int
    name: str
    kind: str
    owner: str
    area_m2: float
    classes: frozenset[str] | None  # None: every class


def _minutes(hhmm: str) -> int:
    hours, minutes = _HHMM.match(hhmm).groups()  # type: ignore[union-attr]
    return int(hours) * 60 + int(minutes)


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class _ClassView:
    """What of a case the rules read, for cases of one matter class and kind."""

    rules: list[Rule]  # those that may hold for such a case (class and kind conditions met)
    signature: tuple[int, ...]  # their ids: classes with the same rules route alike
    reads: frozenset[str]  # the facts they read
    # For a decision by rules[j] (j = len(rules): none), what rules 0 … j read: a getter of
    # the key columns, and the responsibility area kinds.
    prefixes: tuple[tuple[Callable[[tuple[Any, ...]], Any], tuple[str, ...]], ...]
    index: dict[int, int]  # rule id → j


class Router:
    """Routes many cases with one rule set: ``evaluate``'s answers, each distinct input once.

    A case is given as its ``columns`` (a key), the ids of the responsibility areas holding
    it, and a row with all its facts. A decision depends only on what the rules that may hold
    for the case's matter class read: of the time of day only the slot between the rules'
    ``time_of_day`` boundaries it falls in (they are whole minutes), of the day only its type,
    of the areas only the hit of each kind those rules name; and two classes that the same
    rules may hold for are routed alike (their class conditions are met, and nothing else of
    a rule reads the class: areas applying to the class are found per class). Cases agreeing
    on that share one ``evaluate`` call, made on the real facts of one of them.

    Rules are given synthetic ids (their index in position order), so a decision names its
    rule even for a document's rules, which have no ids yet. Disabled and invalid rules are
    dropped up front (``evaluate`` skips them anyway), and for each class only the rules
    whose class conditions admit it are passed on: same decision, shorter trace.
    """

    def __init__(self, rules: Sequence[Rule], active_units: Mapping[str, bool] | None) -> None:
        self.rules = sorted(rules, key=lambda r: r.position)
        self.active_units = active_units
        self.calendar: Any = None  # WorkCalendar, when a rule reads the day type
        self.areas: dict[int, _Area] = {}  # the responsibility areas of the rules' kinds
        self.usable = [
            replace(r, id=i) for i, r in enumerate(self.rules) if r.enabled and not validate_rule(r)
        ]
        self._filters = [self._filter(r) for r in self.usable]
        reads = [self._reads(r) for r in self.usable]
        self.grouped = all(r is not None for r in reads)  # else per-case resolution
        self.needs = {c for r in reads for c in r or ()}
        self.kinds = {k for r in self.usable for k in _as_list(r.match.get("inside_area_kind", []))}
        self.bounds = sorted(
            {
                _minutes(r.match["time_of_day"][end])
                for r in self.usable
                if "time_of_day" in r.match
                for end in ("from", "to")
            }
        )
        self.columns = ("category", "kind", *sorted(self.needs - {"area_ids"}))
        self._by_class: dict[tuple[str, str], _ClassView] = {}
        self._hit_keys: dict[tuple[tuple[int, ...], tuple[str, ...]], tuple[int, ...]] = {}
        # signature → (depths decided, depth → what rules 0 … depth read → decision)
        self._decisions: dict[tuple[int, ...], tuple[list[int], dict[int, dict[Any, Decided]]]] = {}

    @staticmethod
    def _reads(rule: Rule) -> set[str] | None:
        """The facts a rule reads; None when it has a condition or target unknown here."""
        columns: set[str] = set()
        for key in rule.match:
            if key not in _CONDITION_COLUMNS:
                return None
            columns.update(_CONDITION_COLUMNS[key])
        if rule.target is not None:
            if rule.target not in _TARGET_COLUMNS:
                return None
            columns.update(_TARGET_COLUMNS[rule.target])
        return columns

    @staticmethod
    def _filter(rule: Rule) -> tuple[frozenset[str] | None, frozenset[str] | None, frozenset[str] | None]:
        """The classes, majors and kinds a rule admits (None: any), from plain values only."""

        def plain(key: str, shape: re.Pattern[str] | None = None) -> frozenset[str] | None:
            values = rule.match.get(key)
            values = [values] if isinstance(values, str) and shape is None else values
            if isinstance(values, list) and all(
                isinstance(v, str) and (shape is None or shape.match(v)) for v in values
            ):
                return frozenset(values)
            return None

        kinds = plain("kind")
        if "component_owner" in rule.match:  # a component matter's only (validate_match says so)
            kinds = (kinds or frozenset(("component",))) & {"component"}
        return plain("classes", _CLASS), plain("majors", _MAJOR), kinds

    def _admits(self, i: int, category: str, kind: str) -> bool:
        """False when the usable rule i's class or kind conditions exclude a case."""
        classes, majors, kinds = self._filters[i]
        return (
            (classes is None or category in classes)
            and (majors is None or category[:2] in majors)
            and (kinds is None or kind in kinds)
        )

    def _for_class(self, category: str, kind: str) -> _ClassView:
        found = self._by_class.get((category, kind))
        if found is None:
            rules = [r for i, r in enumerate(self.usable) if self._admits(i, category, kind)]
            prefixes = []
            read: set[str] = set()
            kinds: set[str] = set()
            for j in range(len(rules) + 1):
                if j < len(rules):
                    read |= self._reads(rules[j]) or set()
                    kinds.update(_as_list(rules[j].match.get("inside_area_kind", [])))
                # The kind always: cheap, and the getter never returns an empty tuple.
                columns = (1, *(i for i, c in enumerate(self.columns) if i > 1 and c in read))
                getter = itemgetter(*columns) if len(columns) > 1 else itemgetter(1)
                prefixes.append((getter, tuple(sorted(kinds))))
            found = self._by_class[category, kind] = _ClassView(
                rules,
                tuple(r.id for r in rules),  # type: ignore[misc]
                frozenset(read),
                tuple(prefixes),
                {r.id: j for j, r in enumerate(rules)},  # type: ignore[misc]
            )
        return found

    def classes_reading(self, codes: Sequence[str], fact: str) -> list[str]:
        """Those of the matter classes ``codes`` whose rules read ``fact``."""
        return [c for c in codes if any(fact in self._for_class(c, k).reads for k in ("component", "event"))]

    def _hits(self, ids: Sequence[int]) -> dict[str, AreaHit]:
        """As ``responsibility.owners_at``: per kind the smallest area (then lowest id)."""
        best: dict[str, _Area] = {}
        for area in (self.areas[i] for i in ids):
            held = best.get(area.kind)
            if held is None or (area.area_m2, area.id) < (held.area_m2, held.id):
                best[area.kind] = area
        return {k: AreaHit(a.id, a.name, a.kind, a.owner, round(a.area_m2, 1)) for k, a in best.items()}

    def _hit_key(self, ids: tuple[int, ...], kinds: tuple[str, ...]) -> tuple[int, ...]:
        found = self._hit_keys.get((ids, kinds))
        if found is None:
            hits = self._hits(ids)
            found = self._hit_keys[(ids, kinds)] = tuple(hits[k].id if k in hits else 0 for k in kinds)
        return found

    def facts(self, row: Mapping[str, Any], area_ids: tuple[int, ...] = ()) -> CaseFacts:
        """A case's facts as ``resolve_facts`` completes them at dispatch: the decision time,
        and what the rules read of areas, component owner and day type."""
        code = row["component_code"]
        owner = "component_owner" in self.needs and code
        at = row["at"]
        workday = self.calendar.is_workday(at.astimezone(TZ).date()) if "workday" in self.needs else None
        return CaseFacts(
            category=row["category"],
            kind=row["kind"],
            area_code=row["area_code"],
            street_code=row["street_code"],
            community_code=row["community_code"],
            grid_code=row["grid_code"],
            component_code=code,
            lon=row["lon"],
            lat=row["lat"],
            at=at,
            areas=self._hits(area_ids) if self.kinds else None,
            component_owner=row["component_owner"] if owner else None,
            component_registered=row["component_registered"] if owner else None,
            is_workday=workday,
        )

    def decide(self, key: tuple[Any, ...], row: Mapping[str, Any], area_ids: tuple[int, ...] = ()) -> Decided:
        """(index of the rule in position order, unit code) for a case whose ``columns`` are
        ``key`` and which lies in the areas ``area_ids`` (``row``: its facts, or those of a case
        agreeing with it on both); (None, None) when no rule gives a unit.

        A decision by the view's rule j holds for every case agreeing on what rules 0 … j read
        (rules after j are never looked at): it is kept under that, and found for a new case
        by trying the depths decided so far, shallowest first.
        """
        view = self._for_class(key[0], key[1])
        depths, tables = self._decisions.setdefault(view.signature, ([], {}))
        for depth in depths:
            getter, kinds = view.prefixes[depth]
            found = tables[depth].get((getter(key), self._hit_key(area_ids, kinds) if kinds else None))
            if found is not None:
                return found
        decision = evaluate(view.rules, self.facts(row, area_ids), self.active_units)
        depth = view.index.get(decision.rule_id, len(view.rules))  # type: ignore[arg-type]
        getter, kinds = view.prefixes[depth]
        if depth not in tables:
            tables[depth] = {}
            bisect.insort(depths, depth)
        key_at = (getter(key), self._hit_key(area_ids, kinds) if kinds else None)
        found = tables[depth][key_at] = (decision.rule_id, decision.unit_code)
        return found


@dataclass
class _Cases:
    """The period's dispatched cases, ready to route."""

    router: Router
    rows: list[Any]  # records of _CASES_SQL
    areas: list[tuple[int, ...]]  # per row: the ids of the areas of the rules' kinds holding it
    units: dict[str, tuple[bool, str]]  # code → (active, name)
    version: int | None
    start: datetime
    end: datetime

    def column(self, name: str) -> int:
        return list(self.rows[0].keys()).index(name)


async def _cases(
    session: AsyncSession, rules: Sequence[Rule] | int, start: datetime, end: datetime
) -> _Cases:
    start_at, end_at = _period(start, end)
    assert start_at is not None and end_at is not None
    version = None
    if isinstance(rules, int):
        version = (await version_meta(session, rules))["version"]
        rules = await load_rules(session, version)
    units = {
        r.code: (r.active, r.name)
        for r in await session.execute(text("SELECT code, active, name FROM units"))
    }
    router = Router(rules, {code: active for code, (active, _) in units.items()})
    args: list[Any] = [start_at, end_at]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    parts = dict.fromkeys(
        ("component_registered", "component_owner", "time_slot", "workday", "far_day"), "NULL"
    )
    wanted = set(_FACTS)  # the per-case path hands the rules module everything
    if router.grouped:
        wanted = set(router.needs)
        if "component_owner" in wanted:
            wanted.add("component_code")
        if router.kinds:
            wanted |= {"lon", "lat"}
        if router.bounds or "workday" in wanted:
            wanted.add("at")
    parts.update({name: sql if name in wanted else "NULL" for name, sql in _FACTS.items()})
    joins = ""
    if "component_owner" in router.needs:
        parts["component_registered"] = (
            "CASE WHEN nullif(btrim(c.component_code), '') IS NOT NULL THEN cp.id IS NOT NULL END"
        )
        parts["component_owner"] = "cu.code"
        joins += _COMPONENT_JOIN
    if router.bounds or "workday" in router.needs:
        # Only for the classes whose rules read them: fewer distinct keys for the others.
        codes = [c.strip() for c in await session.scalars(text("SELECT code FROM matter_classes"))]

        def reading(fact: str) -> str:
            return f"c.category::text = ANY({arg(router.classes_reading(codes, fact))}::text[])"

    if router.bounds:
        # width_bucket counts the boundaries at or before the minute, as bisect_right.
        local = f"(e.at AT TIME ZONE '{TZ.key}')"
        minute = f"(extract(hour FROM {local}) * 60 + extract(minute FROM {local}))::int"
        slot = f"width_bucket({minute}, {arg(router.bounds)}::int[])"
        parts["time_slot"] = f"CASE WHEN {reading('time_slot')} THEN {slot} END"
    if "workday" in router.needs:
        router.calendar = await load_calendar(session)
        first, last = (start_at - timedelta(days=1)).date(), (end_at + _DAYS_AFTER).date()
        days = (first + timedelta(days=i) for i in range((last - first).days + 1))
        rest = [d for d in days if not router.calendar.is_workday(d)]
        day = f"(e.at AT TIME ZONE '{TZ.key}')::date"
        within = f"{day} BETWEEN {arg(first)} AND {arg(last)}"
        gate = reading("workday")
        parts["workday"] = f"CASE WHEN {gate} AND {within} THEN {day} <> ALL({arg(rest)}::date[]) END"
        parts["far_day"] = f"CASE WHEN {gate} AND NOT ({within}) THEN {day} END"
    # asyncpg directly: a year is ~150k rows, and its records are several times cheaper than
    # SQLAlchemy rows. JIT costs more than it saves on this query (for the rest of the
    # caller's transaction, too: a read-only one).
    conn = await raw_connection(session)
    await conn.execute("SET LOCAL jit = off")
    rows = await conn.fetch(_CASES_SQL.format(joins=joins, **parts), *args)
    cases = _Cases(router, rows, [()] * len(rows), units, version, start_at, end_at)
    if router.kinds and rows:
        cases.areas = await _areas_holding(session, router, cases)
    return cases


async def _areas_holding(session: AsyncSession, router: Router, cases: _Cases) -> list[tuple[int, ...]]:
    """Per case, the areas of the rules' kinds holding its point and applying to its class
    (``ST_Intersects``: the boundary holds, as in ``responsibility.owners_at``)."""
    found = (await session.execute(text(_AREAS_SQL), {"kinds": sorted(router.kinds)})).all()
    router.areas = {
        r.id: _Area(
            r.id,
            r.name,
            r.kind,
            r.owner,
            r.area_m2,
            frozenset(r.matter_classes) if r.matter_classes is not None else None,
        )
        for r in found
    }
    out: list[tuple[int, ...]] = [()] * len(cases.rows)
    if not found:
        return out
    rows, n = cases.rows, len(cases.rows)
    lon, lat, category = cases.column("lon"), cases.column("lat"), cases.column("category")
    points = shapely.points(
        np.fromiter((r[lon] for r in rows), float, n), np.fromiter((r[lat] for r in rows), float, n)
    )
    tree = shapely.STRtree(shapely.from_wkb([r.wkb for r in found]))
    areas = [router.areas[r.id] for r in found]
    held: dict[int, list[int]] = defaultdict(list)
    for p, a in zip(*(i.tolist() for i in tree.query(points, predicate="intersects")), strict=True):
        area = areas[a]
        if area.classes is None or rows[p][category] in area.classes:
            held[p].append(area.id)
    for p, ids in held.items():
        out[p] = tuple(sorted(ids))
    return out


async def _per_case(session: AsyncSession, router: Router, row: Any) -> Decided:
    """The slow path: the rules module resolves what it needs of this one case."""
    base = CaseFacts(
        category=row["category"],
        kind=row["kind"],
        area_code=row["area_code"],
        street_code=row["street_code"],
        community_code=row["community_code"],
        grid_code=row["grid_code"],
        component_code=row["component_code"],
        lon=row["lon"],
        lat=row["lat"],
        at=row["at"],
    )
    facts = await resolve_facts(session, base, router.usable)
    decision = evaluate(router.usable, facts, router.active_units)
    return decision.rule_id, decision.unit_code


async def route_cases(
    session: AsyncSession, rules: Sequence[Rule] | int, start: datetime, end: datetime
) -> dict[str, tuple[int | None, str | None]]:
    """Case number → (position of the rule, unit) ``rules`` give it; (None, None): none does.

    Case by case, for checking the simulation: ``simulate`` counts the same decisions.
    """
    cases = await _cases(session, rules, start, end)
    router = cases.router
    out: dict[str, tuple[int | None, str | None]] = {}
    if not cases.rows:
        return out
    key_of = itemgetter(*(cases.column(c) for c in router.columns))
    for row, areas in zip(cases.rows, cases.areas, strict=True):
        if router.grouped:
            index, unit = router.decide(key_of(row), row, areas)
        else:
            index, unit = await _per_case(session, router, row)
        out[row["number"]] = (router.rules[index].position if index is not None else None, unit)
    return out


async def simulate(
    session: AsyncSession, rules: Sequence[Rule] | int, start: datetime, end: datetime
) -> dict[str, Any]:
    """Where the cases filed in [start, end) would have gone under ``rules`` (a version or rules).

    ``{"cases", "changed", "unchanged", "by_hand", "unmatched", "moves": [{"from", "to",
    "count", "samples"}] (most first), "by_rule": [{"position", "name", "cases", "changed"}],
    "method", "elapsed_ms"}``. Each case is decided as at its first dispatch (its time; the
    areas, the component register and the units as they are now: a rule whose unit is
    inactive falls through, as it would at dispatch).
    """
    started = time.perf_counter()
    cases = await _cases(session, rules, start, end)
    router, rows = cases.router, cases.rows
    moves: Counter[tuple[str | None, str | None]] = Counter()
    taken: Counter[int | None] = Counter()
    changed_by_rule: Counter[int | None] = Counter()
    by_hand = 0
    samples: dict[tuple[str | None, str | None], list[str]] = defaultdict(list)

    def tally(index: int | None, unit: str | None, actual: str | None, hand: bool, n: int) -> bool:
        nonlocal by_hand
        taken[index] += n
        by_hand += n if hand else 0
        if unit == actual:
            return False
        moves[actual, unit] += n
        changed_by_rule[index] += n
        return True

    if rows and router.grouped:
        # Cases agreeing on the facts read, the areas, the first unit and the way of dispatch
        # are one group: counted in C (Counter over itemgetter and zip), decided once each.
        key_of = itemgetter(*(cases.column(c) for c in router.columns))
        keys = list(zip(map(key_of, rows), cases.areas, strict=True))
        how = itemgetter(cases.column("unit"), cases.column("by_hand"))
        groups = Counter(zip(keys, map(how, rows), strict=True))
        first = dict(zip(reversed(keys), range(len(rows) - 1, -1, -1), strict=True))  # a case per key
        decided: dict[tuple[Any, ...], Decided] = {}
        moved: dict[tuple[Any, ...], tuple[str | None, str | None]] = {}
        for (key, (actual, hand)), n in groups.items():
            found = decided.get(key)
            if found is None:
                i = first[key]
                found = decided[key] = router.decide(key[0], rows[i], key[1])
            if tally(*found, actual, hand, n):
                moved[key, (actual, hand)] = (actual, found[1])
        wanted = sum(min(n, SAMPLES) for n in moves.values())
        for group, row in zip(zip(keys, map(how, rows), strict=True), rows, strict=True) if moved else ():
            pair = moved.get(group)
            if pair is not None and len(samples[pair]) < SAMPLES:
                samples[pair].append(row["number"])
                wanted -= 1
                if not wanted:
                    break
    else:
        for row in rows:
            index, unit = await _per_case(session, router, row)
            if (
                tally(index, unit, row["unit"], row["by_hand"], 1)
                and len(samples[row["unit"], unit]) < SAMPLES
            ):
                samples[row["unit"], unit].append(row["number"])

    def name(code: str | None) -> str | None:
        return cases.units[code][1] if code in cases.units else None

    changed = sum(moves.values())
    by_rule = [
        {
            "position": r.position,
            "rule_id": r.id,
            "name": r.name,
            "enabled": r.enabled,
            "cases": taken[i],
            "changed": changed_by_rule[i],
        }
        for i, r in enumerate(router.rules)
    ]
    if taken[None]:
        by_rule.append(
            {
                "position": None,
                "rule_id": None,
                "name": None,
                "enabled": None,
                "cases": taken[None],
                "changed": changed_by_rule[None],
            }
        )
    return {
        "version": cases.version,
        "rules": len(router.rules),
        "from": cases.start,
        "to": cases.end,
        "cases": len(rows),
        "changed": changed,
        "unchanged": len(rows) - changed,
        "by_hand": by_hand,
        "unmatched": taken[None],
        "moves": [
            {
                "from": a,
                "from_name": name(a),
                "to": b,
                "to_name": name(b),
                "count": n,
                "samples": sorted(samples[(a, b)]),
            }
            for (a, b), n in sorted(moves.items(), key=lambda m: (-m[1], m[0][0] or "", m[0][1] or ""))
        ],
        "by_rule": by_rule,
        "method": "grouped" if router.grouped else "per_case",
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }


# --- quality --------------------------------------------------------------------------------

MIN_CASES: Final = 5  # fewer routed cases say nothing about a rule
MARGIN: Final = 0.10  # return rate this far above the other rules' cases' rate stands out

# Each case is charged to the rule of its first dispatch (the trace in the event; an event
# without a "rule" key, from before traces were stored, falls back to the case's columns).
# Dispatches by hand ("rule": null) are no rule's. Only returns to the command center count
# (to_status 'returned'): a child unit handing a case back to its dispatch center (二级派遣)
# is a boundary below the rules.
_QUALITY_SQL = """
WITH scope AS (
    SELECT c.id, c.rule_id, c.rule_set,
           CASE WHEN c.handle_deadline_at IS NULL THEN false
                WHEN c.handled_at IS NOT NULL THEN c.handled_at > c.handle_deadline_at
                ELSE c.status = 'dispatched' AND c.handle_deadline_at < now() END AS overdue
    FROM cases c
    WHERE (CAST(:start AS timestamptz) IS NULL OR c.filed_at >= :start)
      AND (CAST(:end AS timestamptz) IS NULL OR c.filed_at < :end)
),
first AS MATERIALIZED (  -- the first dispatch, none before it, with its payload small
    SELECT e.case_id, s.overdue, s.rule_id AS case_rule_id, s.rule_set AS case_rule_set,
           e.payload #- '{rule,trace}' #- '{rule,facts}' AS payload  -- decompressed once
    FROM case_events e JOIN scope s ON s.id = e.case_id
    WHERE e.action = 'dispatch' AND NOT EXISTS (
        SELECT 1 FROM case_events p WHERE p.case_id = e.case_id AND p.action = 'dispatch' AND p.id < e.id)
),
counted AS (
    SELECT e.case_id,
           count(*) FILTER (WHERE e.action = 'dispatch') - 1 AS redispatches,
           count(*) FILTER (WHERE e.action = 'return' AND e.to_status = 'returned') AS returns
    FROM case_events e JOIN scope s ON s.id = e.case_id
    WHERE e.action IN ('dispatch', 'return')
    GROUP BY e.case_id
),
charged AS (
    SELECT f.case_id, f.overdue, n.redispatches, n.returns,
           CASE WHEN jsonb_typeof(f.payload->'rule') = 'object' THEN (f.payload->'rule'->>'rule_id')::int
                WHEN NOT f.payload ? 'rule' THEN f.case_rule_id END AS rule_id,
           CASE WHEN jsonb_typeof(f.payload->'rule') = 'object' THEN (f.payload->'rule'->>'rule_set')::int
                WHEN NOT f.payload ? 'rule' THEN f.case_rule_set END AS rule_set,
           f.payload->'rule'->>'rule_name' AS rule_name
    FROM first f JOIN counted n ON n.case_id = f.case_id
),
kept AS (
    SELECT * FROM charged
    WHERE rule_id IS NOT NULL AND (CAST(:version AS integer) IS NULL OR rule_set = :version)
),
by_reason AS (
    SELECT rule_id, jsonb_object_agg(reason, n) AS reasons
    FROM (
        SELECT k.rule_id, coalesce(e.payload->>'reason', 'other') AS reason, count(*) AS n
        FROM kept k JOIN case_events e ON e.case_id = k.case_id
        WHERE k.returns > 0 AND e.action = 'return' AND e.to_status = 'returned'
        GROUP BY 1, 2
    ) t
    GROUP BY rule_id
)
SELECT coalesce(k.rule_set, r.rule_set) AS rule_set, k.rule_id, coalesce(r.name, min(k.rule_name)) AS name,
       r.position, u.code AS unit, r.target,
       count(*) AS routed,
       count(*) FILTER (WHERE k.returns > 0) AS returned,
       sum(k.returns) AS returns,
       sum(k.redispatches) AS redispatches,
       count(*) FILTER (WHERE k.overdue) AS overdue,
       b.reasons
FROM kept k
LEFT JOIN by_reason b ON b.rule_id = k.rule_id
LEFT JOIN dispatch_rules r ON r.id = k.rule_id
LEFT JOIN units u ON u.id = r.unit_id
GROUP BY k.rule_set, r.rule_set, k.rule_id, r.name, r.position, u.code, r.target, b.reasons
"""


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def quality_report(
    session: AsyncSession,
    version: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Per (rule set, rule) that first routed cases filed in [start, end): the figures, worst first.

    Each rule: ``routed`` cases; ``returned`` of them (回退 to the center at least once) and
    ``returns`` (events) by reason code; ``redispatches`` (dispatches after the first);
    ``overdue`` (handled after the handling deadline, or still being handled past it) and its
    share; ``return_rate`` = returned / routed. A rule *stands out* when it routed at least
    ``MIN_CASES`` cases and its return rate is at least ``MARGIN`` above the rate of all the
    other rules' cases together (not the overall rate, which a big rule would drag up to its
    own). Standing-out rules come first, then by return rate and volume.
    """
    if version is not None:
        await version_meta(session, version)  # 404 for a version that does not exist
    start_at, end_at = _period(start, end)
    # The CTEs' row estimates are far off: JIT would compile for a second (this transaction's
    # rest is read-only as well).
    await session.execute(text("SET LOCAL jit = off"))
    rows = (
        await session.execute(text(_QUALITY_SQL), {"start": start_at, "end": end_at, "version": version})
    ).all()
    total_routed = sum(r.routed for r in rows)
    total_returned = sum(r.returned for r in rows)
    items = []
    for r in rows:
        reasons: dict[str, int] = r.reasons or {}
        others_routed, others_returned = total_routed - r.routed, total_returned - r.returned
        baseline = others_returned / others_routed if others_routed else 0.0
        rate = r.returned / r.routed
        items.append(
            {
                "rule_set": r.rule_set,
                "rule_id": r.rule_id,
                "name": r.name,
                "position": r.position,
                "unit": r.unit,
                "target": r.target,
                "routed": r.routed,
                "returned": r.returned,
                "returns": int(r.returns),
                "returns_by_reason": {
                    **{reason: reasons.get(reason, 0) for reason in RETURN_REASONS},
                    **{k: v for k, v in reasons.items() if k not in RETURN_REASONS},
                },
                "redispatches": int(r.redispatches),
                "overdue": r.overdue,
                "overdue_share": _rate(r.overdue, r.routed),
                "return_rate": round(rate, 4),
                "baseline_rate": round(baseline, 4),
                "stands_out": r.routed >= MIN_CASES and rate >= baseline + MARGIN,
            }
        )
    items.sort(key=lambda i: (not i["stands_out"], -i["return_rate"], -i["routed"], i["rule_id"]))
    return {
        "version": version,
        "from": start_at,
        "to": end_at,
        "routed": total_routed,
        "returned": total_returned,
        "return_rate": _rate(total_returned, total_routed),
        "min_cases": MIN_CASES,
        "margin": MARGIN,
        "rules": items,
    }


async def quality(
    session: AsyncSession,
    version: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """The rules' figures of ``quality_report``, those whose return rate stands out first."""
    return (await quality_report(session, version, start, end))["rules"]
