"""How dispatch rules do on real cases: replaying a rule set (simulation) and its record (quality).

Simulation (规则模拟) answers "had these rules been in force, where would that period's cases
have gone?": every case filed in [from, to) that was dispatched, by the rules or by hand, is
routed again with ``cases.rules.evaluate`` and compared with the unit it first went to (the
unit of its first ``dispatch`` event). The facts of all cases come in one query; routing is
pure Python, linear in the cases, with the decision of each distinct combination of the facts
the rules look at computed once (a year holds far fewer combinations than cases).

Quality (规则质量) judges each rule by the cases it routed first (the rule in the first
``dispatch`` event's trace): returns to the command center (回退) with their reason codes,
re-dispatches, and handling deadlines missed. Rules whose return rate stands out are listed
first, so that the boundary between two units that failed can be found and redrawn.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from operator import itemgetter
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.deadlines import TZ
from cases.lifecycle import RETURN_REASONS
from cases.rule_sets import version_meta
from cases.rules import CaseFacts, Rule, evaluate, load_rules, validate_rule
from geo.errors import InvalidInput
from geo.locator import raw_connection

SAMPLES: Final = 3  # case numbers shown per move, to look at before believing a figure

# Which facts each condition and target of the rules module reads (category and kind are
# always part of the key). A set using a condition or target not listed here is keyed on all
# the facts: slower, never wrong.
_CONDITION_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "classes": (),
    "majors": (),
    "kind": (),
    "areas": ("area_code",),
    "streets": ("street_code",),
}
_TARGET_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "street_office": ("street_code",),
    "area_urban_management": ("area_code",),
    "area_sanitation": ("area_code",),
}
_CLASS = re.compile(r"^[0-9]{5}$")
_MAJOR = re.compile(r"^[0-9]{2}$")


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


FACTS: Final = (
    "category",
    "kind",
    "area_code",
    "street_code",
    "community_code",
    "grid_code",
    "component_code",
)


class Router:
    """Routes many cases with one rule set: ``evaluate``'s answers, each distinct input once.

    A decision depends only on the facts the set's conditions and targets read
    (``key_fields``), so it is computed once per distinct combination of them. Rules are
    given synthetic ids (their index in position order), so a decision names its rule even
    for a document's rules, which have no ids yet. Disabled and invalid rules are dropped up
    front (``evaluate`` skips them anyway), and for each matter class only the rules whose
    class conditions admit it are passed on: same decision, shorter trace.
    """

    def __init__(self, rules: Sequence[Rule], active_units: dict[str, bool] | None) -> None:
        self.rules = sorted(rules, key=lambda r: r.position)
        self.active_units = active_units
        self._usable = [
            replace(r, id=i) for i, r in enumerate(self.rules) if r.enabled and not validate_rule(r)
        ]
        self.key_fields = self._key_fields(self._usable)
        self._by_class: dict[str, list[Rule]] = {}
        self._cache: dict[tuple[Any, ...], tuple[int | None, str | None]] = {}

    @staticmethod
    def _key_fields(rules: Sequence[Rule]) -> tuple[str, ...]:
        fields: set[str] = set()
        for rule in rules:
            for key in rule.match:
                if key not in _CONDITION_FIELDS:
                    return FACTS
                fields.update(_CONDITION_FIELDS[key])
            if rule.target is not None:
                if rule.target not in _TARGET_FIELDS:
                    return FACTS
                fields.update(_TARGET_FIELDS[rule.target])
        return ("category", "kind", *sorted(fields))

    @staticmethod
    def _admits(rule: Rule, category: str) -> bool:
        """False when the rule's class conditions exclude ``category`` (plain codes only)."""

        def plain(values: Any, shape: re.Pattern[str]) -> bool:
            return isinstance(values, list) and all(isinstance(v, str) and shape.match(v) for v in values)

        classes, majors = rule.match.get("classes"), rule.match.get("majors")
        if plain(classes, _CLASS) and category not in classes:
            return False
        return not (plain(majors, _MAJOR) and category[:2] not in majors)

    def route_key(self, key: tuple[Any, ...]) -> tuple[int | None, str | None]:
        """The decision for the facts ``key`` (values of ``key_fields``): (rule index, unit code),
        (None, None) when no rule gives a unit. The facts outside the key are read by no rule."""
        found = self._cache.get(key)
        if found is None:
            values = dict.fromkeys(FACTS)
            values.update(zip(self.key_fields, key, strict=True))
            facts = CaseFacts(**values)
            candidates = self._by_class.get(facts.category)
            if candidates is None:
                candidates = [r for r in self._usable if self._admits(r, facts.category)]
                self._by_class[facts.category] = candidates
            decision = evaluate(candidates, facts, self.active_units)
            found = self._cache[key] = (decision.rule_id, decision.unit_code)
        return found

    def route(self, facts: CaseFacts) -> tuple[int | None, str | None]:
        """The decision for one case's facts; see ``route_key``."""
        return self.route_key(tuple(getattr(facts, f) for f in self.key_fields))


# The first dispatch of each case filed in the period: number, the facts (in FACTS order,
# trimmed as ``facts_of_case`` does), the unit and whether it was chosen by hand. Only the
# unit is extracted from the payload: the trace stays in the database.
_CASES_SQL = """
SELECT c.number, c.category::text, c.kind, c.area_code, nullif(btrim(c.street_code), ''),
       nullif(btrim(c.community_code), ''), nullif(c.grid_code::text, ''),
       nullif(c.component_code::text, ''),
       d.unit, d.by_hand
FROM cases c
CROSS JOIN LATERAL (
    SELECT e.payload->>'unit' AS unit,
           jsonb_typeof(e.payload->'rule') IS DISTINCT FROM 'object' AS by_hand
    FROM case_events e
    WHERE e.case_id = c.id AND e.action = 'dispatch'
    ORDER BY e.id LIMIT 1
) d
WHERE c.filed_at >= $1 AND c.filed_at < $2
"""
_UNIT, _BY_HAND = 1 + len(FACTS), 2 + len(FACTS)


async def simulate(
    session: AsyncSession, rules: Sequence[Rule] | int, start: datetime, end: datetime
) -> dict[str, Any]:
    """Where the cases filed in [start, end) would have gone under ``rules`` (a version or rules).

    ``{"cases", "changed", "unchanged", "by_hand", "unmatched", "moves": [{"from", "to",
    "count", "samples"}] (most first), "by_rule": [{"position", "name", "cases", "changed"}],
    "elapsed_ms"}``. Units are checked as they are now: a rule whose unit is inactive falls
    through, as it would at dispatch. Turns JIT off for the rest of the caller's transaction
    (it costs more than it saves on this query).
    """
    started = time.perf_counter()
    start_at, end_at = _period(start, end)
    version = None
    if isinstance(rules, int):
        version = (await version_meta(session, rules))["version"]
        rules = await load_rules(session, version)
    units = {
        r.code: (r.active, r.name)
        for r in await session.execute(text("SELECT code, active, name FROM units"))
    }
    router = Router(rules, {code: active for code, (active, _) in units.items()})

    # asyncpg directly: a year is ~150k rows, and its records are several times cheaper than
    # SQLAlchemy rows.
    conn = await raw_connection(session)
    await conn.execute("SET LOCAL jit = off")
    rows = await conn.fetch(_CASES_SQL, start_at, end_at)

    # Cases with the same key facts, first unit and way of dispatch are one group: counted in
    # C (Counter over itemgetter), routed once each.
    n_key = len(router.key_fields)
    group_of = itemgetter(*(1 + FACTS.index(f) for f in router.key_fields), _UNIT, _BY_HAND)
    moves: Counter[tuple[str | None, str | None]] = Counter()
    taken: Counter[int | None] = Counter()
    changed_by_rule: Counter[int | None] = Counter()
    moved: dict[tuple[Any, ...], tuple[str | None, str | None]] = {}
    by_hand = 0
    for group, n in Counter(map(group_of, rows)).items():
        actual, hand = group[n_key], group[n_key + 1]
        index, unit = router.route_key(group[:n_key])
        taken[index] += n
        by_hand += n if hand else 0
        if unit != actual:
            moves[actual, unit] += n
            changed_by_rule[index] += n
            moved[group] = (actual, unit)
    samples: dict[tuple[str | None, str | None], list[str]] = defaultdict(list)
    wanted = sum(min(n, SAMPLES) for n in moves.values())
    for row in rows if moved else ():
        pair = moved.get(group_of(row))
        if pair is not None and len(samples[pair]) < SAMPLES:
            samples[pair].append(row[0])
            wanted -= 1
            if not wanted:
                break

    def name(code: str | None) -> str | None:
        return units[code][1] if code in units else None

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
        "version": version,
        "rules": len(router.rules),
        "from": start_at,
        "to": end_at,
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
first AS (
    SELECT DISTINCT ON (e.case_id) e.case_id, e.payload
    FROM case_events e JOIN scope s ON s.id = e.case_id
    WHERE e.action = 'dispatch'
    ORDER BY e.case_id, e.id
),
charged AS (
    SELECT s.id AS case_id, s.overdue,
           CASE WHEN f.payload ? 'rule' THEN (f.payload->'rule'->>'rule_id')::int ELSE s.rule_id END AS rule_id,
           CASE WHEN f.payload ? 'rule' THEN (f.payload->'rule'->>'rule_set')::int ELSE s.rule_set END AS rule_set,
           f.payload->'rule'->>'rule_name' AS rule_name
    FROM first f JOIN scope s ON s.id = f.case_id
),
kept AS (
    SELECT * FROM charged
    WHERE rule_id IS NOT NULL AND (CAST(:version AS integer) IS NULL OR rule_set = :version)
),
counted AS (
    SELECT k.case_id,
           count(*) FILTER (WHERE e.action = 'dispatch') - 1 AS redispatches,
           count(*) FILTER (WHERE e.action = 'return' AND e.to_status = 'returned') AS returns
    FROM kept k JOIN case_events e ON e.case_id = k.case_id AND e.action IN ('dispatch', 'return')
    GROUP BY k.case_id
),
by_reason AS (
    SELECT rule_id, jsonb_object_agg(reason, n) AS reasons
    FROM (
        SELECT k.rule_id, coalesce(e.payload->>'reason', 'other') AS reason, count(*) AS n
        FROM kept k JOIN case_events e ON e.case_id = k.case_id
        WHERE e.action = 'return' AND e.to_status = 'returned'
        GROUP BY 1, 2
    ) t
    GROUP BY rule_id
)
SELECT coalesce(k.rule_set, r.rule_set) AS rule_set, k.rule_id, coalesce(r.name, min(k.rule_name)) AS name, r.position,
       u.code AS unit, r.target,
       count(*) AS routed,
       count(*) FILTER (WHERE c.returns > 0) AS returned,
       sum(c.returns) AS returns,
       sum(c.redispatches) AS redispatches,
       count(*) FILTER (WHERE k.overdue) AS overdue,
       b.reasons
FROM kept k
JOIN counted c ON c.case_id = k.case_id
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
