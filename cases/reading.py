"""How cases read: one case, its history, the queues, and duplicate candidates for filing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Principal
from cases.lifecycle import ACTIONS, available
from cases.reports import may_see as may_see_report
from geo.errors import Forbidden, InvalidInput, NotFound

DUPLICATE_WINDOW = timedelta(days=7)
READ_ALL = ("operator", "supervisor", "planner")

_SELECT = """
SELECT c.*, ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat, m.name AS category_name,
       cm.name AS community_name, st.name AS street_name, co.name AS county_name, a.name AS area_name,
       u.code AS unit_code, u.name AS unit_name, bu.username AS collector,
       (SELECT array_agg(r.id ORDER BY r.id) FROM reports r WHERE r.case_id = c.id) AS report_ids,
       (SELECT r.collector_id FROM reports r WHERE r.id = c.report_id) AS reporter_id
FROM cases c
JOIN matter_classes m ON m.code = c.category
LEFT JOIN regions cm ON cm.code = c.community_code
LEFT JOIN regions st ON st.code = c.street_code
LEFT JOIN regions co ON co.code = c.county_code
LEFT JOIN management_areas a ON a.code = c.area_code
LEFT JOIN units u ON u.id = c.unit_id
LEFT JOIN beats b ON b.grid_code = c.grid_code
LEFT JOIN users bu ON bu.id = b.collector_id
"""


def light_of(row: Any, at: datetime) -> str | None:
    """green under 80 % of the stage's counting time, yellow 80–100 %, red overdue."""
    if row.deadline_at is None:
        return None
    if at > row.deadline_at:
        return "red"
    return "yellow" if row.yellow_at is not None and at >= row.yellow_at else "green"


def _viewer_actions(row: Any, viewer: Principal) -> list[str]:
    roles = set(viewer.roles) | ({"operator"} if viewer.has("supervisor") else set())
    valid = available(
        "case", row.status, extension_pending=bool(row.extension), signed=row.signed_at is not None
    )
    if viewer.has("unit") and row.unit_id != viewer.unit_id:
        return [a for a in valid if "unit" not in ACTIONS[a].roles and ACTIONS[a].roles & roles]
    return [a for a in valid if ACTIONS[a].roles & roles]


def _region(code: str | None, name: str | None) -> dict[str, str] | None:
    return {"code": code, "name": name} if code else None


def shape(row: Any, viewer: Principal, at: datetime | None = None) -> dict[str, Any]:
    at = at or datetime.now(UTC)
    suspended = row.status == "suspended"
    return {
        "number": row.number,
        "status": row.status,
        "kind": row.kind,
        "category": row.category,
        "category_name": row.category_name,
        "description": row.description,
        "location": {"lon": row.lon, "lat": row.lat},
        "place": row.place,
        "grid": row.grid_code,
        "community": _region(row.community_code, row.community_name),
        "street": _region(row.street_code, row.street_name),
        "county": _region(row.county_code, row.county_name),
        "district": row.area_name,
        "component_code": row.component_code,
        "collector": row.collector,
        "unit": {"code": row.unit_code, "name": row.unit_name} if row.unit_code else None,
        "deadline_class": row.deadline_class,
        "priority": row.priority,
        "deadline_at": row.deadline_at.isoformat() if row.deadline_at else None,
        # Suspended: the counting time left, frozen until resumed.
        "time_left_s": row.frozen_left_s
        if suspended
        else (round((row.deadline_at - at).total_seconds()) if row.deadline_at else None),
        "light": light_of(row, at),
        "deadline_provisional": row.deadline_provisional,
        "report_ids": list(row.report_ids or []),
        "version": row.version,
        "flags": list(row.flags),
        "escalated": row.escalated,
        "rework_count": row.rework_count,
        "return_count": row.return_count,
        "extension": row.extension,
        "signed_at": row.signed_at.isoformat() if row.signed_at else None,
        "filed_at": row.filed_at.isoformat(),
        "dispatched_at": row.dispatched_at.isoformat() if row.dispatched_at else None,
        "handled_at": row.handled_at.isoformat() if row.handled_at else None,
        "closed_at": row.closed_at.isoformat() if row.closed_at else None,
        "actions": _viewer_actions(row, viewer),
    }


async def _collector_may_see(session: AsyncSession, row: Any, viewer: Principal) -> bool:
    if row.reporter_id == viewer.id:
        return True
    return bool(
        await session.scalar(
            text("SELECT 1 FROM collector_tasks WHERE case_id = :c AND collector_id = :u"),
            {"c": row.id, "u": viewer.id},
        )
    )


async def _visible(session: AsyncSession, row: Any, viewer: Principal) -> bool:
    if viewer.has(*READ_ALL):
        return True
    if (
        viewer.has("unit")
        and viewer.unit_id is not None
        and viewer.unit_id in (row.unit_id, row.parent_unit_id)
    ):
        return True  # the unit handling it, or the dispatch center that handed it down
    return viewer.has("collector") and await _collector_may_see(session, row, viewer)


async def case_row(session: AsyncSession, number: str, viewer: Principal, check: bool = True) -> Any:
    row = (await session.execute(text(f"{_SELECT} WHERE c.number = :n"), {"n": number})).first()
    if row is None or (check and not await _visible(session, row, viewer)):
        raise NotFound(f"no case {number}")
    return row


async def get_case(
    session: AsyncSession, number: str, viewer: Principal, check: bool = True
) -> dict[str, Any]:
    """One case as the viewer sees it; ``check=False`` after the viewer's own action, which may
    have taken the case out of their sight (a unit's 回退) but still answers with the case."""
    return shape(await case_row(session, number, viewer, check), viewer)


async def case_number_of(session: AsyncSession, report_id: int) -> str | None:
    return await session.scalar(
        text("SELECT c.number FROM reports r JOIN cases c ON c.id = r.case_id WHERE r.id = :r"),
        {"r": report_id},
    )


async def history(session: AsyncSession, number: str, viewer: Principal) -> list[dict[str, Any]]:
    """The append-only event log of a case and of its reports before filing."""
    row = await case_row(session, number, viewer)
    events = await session.execute(
        text(
            "SELECT e.id, e.at, e.action, e.role, e.from_status, e.to_status, e.payload, e.report_id, "
            "u.username AS actor FROM case_events e LEFT JOIN users u ON u.id = e.actor_id "
            "WHERE e.case_id = :c OR e.report_id IN (SELECT id FROM reports WHERE case_id = :c) ORDER BY e.id"
        ),
        {"c": row.id},
    )
    return [
        {
            "id": e.id,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "role": e.role,
            "action": e.action,
            "from": e.from_status,
            "to": e.to_status,
            "report": e.report_id,
            "payload": e.payload,
        }
        for e in events
    ]


@dataclass(frozen=True)
class CaseFilter:
    status: list[str] | None = None
    district: str | None = None
    street: str | None = None
    grid: str | None = None
    category: str | None = None
    unit: str | None = None
    overdue: bool | None = None
    light: str | None = None
    escalated: bool | None = None
    bbox: tuple[float, float, float, float] | None = None
    text: str | None = None


async def list_cases(
    session: AsyncSession, viewer: Principal, f: CaseFilter, limit: int = 50, after: int | None = None
) -> dict[str, Any]:
    """The case queue, newest first, with keyset pagination (``next`` is the cursor)."""
    where, params = ["true"], {"limit": limit + 1, "after": after}
    if not viewer.has(*READ_ALL):
        if not viewer.has("unit"):
            raise Forbidden("the case queue is for the command center, planners and units")
        where.append("(c.unit_id = :own_unit OR c.parent_unit_id = :own_unit)")
        params["own_unit"] = viewer.unit_id
    if after is not None:
        where.append("c.id < :after")
    if f.status:
        where.append("c.status = ANY(:status)")
        params["status"] = f.status
    if f.district:
        where.append("(c.area_code = :district OR a.name = :district)")
        params["district"] = f.district
    for column, value, key in (
        ("c.street_code", f.street, "street"),
        ("c.grid_code", f.grid, "grid"),
        ("u.code", f.unit, "unit"),
    ):
        if value:
            where.append(f"{column} = :{key}")
            params[key] = value
    if f.category:
        where.append("c.category LIKE :category")
        params["category"] = f.category + ("%" if len(f.category) == 2 else "")
    if f.overdue is not None:
        where.append(("" if f.overdue else "NOT ") + "coalesce(c.deadline_at < now(), false)")
    if f.light == "red":
        where.append("c.deadline_at < now()")
    elif f.light == "yellow":
        where.append("c.deadline_at >= now() AND c.yellow_at <= now()")
    elif f.light == "green":
        where.append("c.deadline_at >= now() AND (c.yellow_at IS NULL OR c.yellow_at > now())")
    elif f.light is not None:
        raise InvalidInput("light is green, yellow or red", errors=[{"field": "light", "message": "unknown"}])
    if f.escalated is not None:
        where.append(("" if f.escalated else "NOT ") + "c.escalated")
    if f.bbox:
        where.append("c.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490)")
        params.update(zip(("x0", "y0", "x1", "y1"), f.bbox, strict=True))
    if f.text:
        where.append("(c.number ILIKE :q OR c.description ILIKE :q OR m.name ILIKE :q)")
        params["q"] = f"%{f.text}%"
    rows = (
        await session.execute(
            text(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY c.id DESC LIMIT :limit"), params
        )
    ).all()
    at = datetime.now(UTC)
    items = [shape(r, viewer, at) for r in rows[:limit]]
    return {"items": items, "next": rows[limit - 1].id if len(rows) > limit else None}


_DUPLICATES = """
SELECT c.number, c.status, c.category, c.description, c.component_code, c.filed_at,
       ST_Distance(c.geom::geography, r.geom::geography) AS distance_m,
       (c.component_code IS NOT NULL AND c.component_code = r.component_code) AS same_component
FROM reports r
JOIN matter_classes m ON m.code = r.category
JOIN cases c ON c.category = r.category AND c.status NOT IN ('closed', 'cancelled')
 AND c.filed_at > now() - CAST(:window AS interval)
 AND (ST_DWithin(c.geom::geography, r.geom::geography, m.duplicate_radius_m)
      OR (c.component_code IS NOT NULL AND c.component_code = r.component_code))
WHERE r.id = :r AND c.id IS DISTINCT FROM r.case_id
ORDER BY same_component DESC, distance_m LIMIT 10
"""


async def duplicates(session: AsyncSession, report_id: int, viewer: Principal) -> list[dict[str, Any]]:
    """Open cases of the same class near the report (class radius, default 30 m) or on its component."""
    report = (
        await session.execute(
            text("SELECT r.*, NULL::int AS case_unit_id FROM reports r WHERE r.id = :r"), {"r": report_id}
        )
    ).first()
    if report is None or not may_see_report(viewer, report):
        raise NotFound(f"no report {report_id}")
    rows = await session.execute(text(_DUPLICATES), {"r": report_id, "window": DUPLICATE_WINDOW})
    return [
        {
            "number": r.number,
            "status": r.status,
            "category": r.category,
            "description": r.description,
            "distance_m": round(r.distance_m, 1),
            "same_component": r.same_component,
            "filed_at": r.filed_at.isoformat(),
        }
        for r in rows
    ]


async def intake_queue(session: AsyncSession, limit: int = 100) -> list[dict[str, Any]]:
    """Reports waiting for an operator (received or verifying), oldest first, with duplicate candidates."""
    rows = await session.execute(
        text(
            "SELECT r.id, r.source, r.status, r.kind, r.category, m.name AS category_name, r.description, "
            "r.grid_code, r.flags, r.verified, r.received_at, ST_X(r.geom) AS lon, ST_Y(r.geom) AS lat "
            "FROM reports r JOIN matter_classes m ON m.code = r.category "
            "WHERE r.status IN ('received', 'verifying') ORDER BY r.received_at, r.id LIMIT :limit"
        ),
        {"limit": limit},
    )
    out = []
    for r in rows.all():
        dup = await session.execute(text(_DUPLICATES), {"r": r.id, "window": DUPLICATE_WINDOW})
        out.append(
            {
                "id": r.id,
                "source": r.source,
                "status": r.status,
                "kind": r.kind,
                "category": r.category,
                "category_name": r.category_name,
                "description": r.description,
                "grid": r.grid_code,
                "location": {"lon": r.lon, "lat": r.lat},
                "flags": list(r.flags),
                "verified": r.verified,
                "received_at": r.received_at.isoformat(),
                "duplicates": [
                    {
                        "number": d.number,
                        "distance_m": round(d.distance_m, 1),
                        "same_component": d.same_component,
                    }
                    for d in dup
                ],
            }
        )
    return out
