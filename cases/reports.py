"""Reports (上报): submission by collectors (idempotent), intake from other channels, reading.

A collector's submission is idempotent on (collector, ``client_id``): the same content sent
again answers with the stored report; different content under the same ``client_id`` is a
conflict. Two racing submissions serialise on the unique index of (collector, client_id): the later
INSERT waits for the first transaction to commit, then finds its row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Principal
from cases.catalogue import MatterCatalogue, MatterClass, matter_class
from cases.photo_store import PhotoStore, StagedFile
from cases.photos import (
    PHOTO_COLUMNS,
    PHOTO_ROWS,
    CheckedPhoto,
    check_photos,
    photo_flags,
    photo_links,
    photo_params,
)
from geo import components
from geo.crs import to_cgcs2000
from geo.errors import Conflict, InvalidInput, NotFound, OutsideJurisdiction
from geo.geocode import reverse
from geo.grid_index import GridIndex
from geo.locator import Location, locate
from geo.pg import Statement, raw_connection

INACCURATE_M = 50.0
SOURCES = ("collector", "hotline", "public", "inspection")
# Who may see every report; collectors see their own, units those of their cases.
READ_ALL = ("operator", "supervisor", "planner")


class ClientIdConflict(Conflict):
    code = "client_id_conflict"
    title = "client_id already used for other content"


@dataclass(frozen=True)
class ReportInput:
    """What a reporter says: the part ``report`` of API.md."""

    kind: str
    category: str
    description: str
    lon: float
    lat: float
    crs: str = "wgs84"
    accuracy_m: float | None = None
    address: str | None = None
    component_code: str | None = None
    observed_at: datetime | None = None
    client_id: str | None = None

    def content_hash(self, photo_hashes: list[str]) -> str:
        # vars(), not asdict(): the fields are flat, and asdict's deep copy showed on the hot path.
        body = {**vars(self), "observed_at": self.observed_at.isoformat() if self.observed_at else None}
        body["photos"] = sorted(photo_hashes)
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


async def _matter(
    session: AsyncSession, category: str, kind: str, catalogue: MatterCatalogue | None
) -> MatterClass:
    """The matter class (422 when unknown or of the other kind)."""
    matter = await matter_class(session, category, catalogue)
    if matter is None:
        raise InvalidInput(
            f"unknown category {category}", errors=[{"field": "category", "message": "unknown"}]
        )
    if matter.kind != kind:
        raise InvalidInput(
            f"category {category} is of kind {matter.kind}, not {kind}",
            errors=[{"field": "kind", "message": f"category {category} is a {matter.kind}"}],
        )
    return matter


async def _component(
    session: AsyncSession, matter: MatterClass, data: ReportInput, where: Location
) -> tuple[str | None, list[str]]:
    """The reported or snapped component and the flag ``component_mismatch`` when it does not fit."""
    if matter.kind != "component" or matter.component_class is None:
        return data.component_code, []
    if data.component_code:
        check = await components.check(
            session, data.component_code, matter.component_class, where.lon, where.lat, 50.0
        )
        return check["code"], (
            [] if check["exists"] and check["class_matches"] and check["near"] else ["component_mismatch"]
        )
    snapped = await components.snap(session, where.lon, where.lat, matter.component_class)
    return (snapped["code"] if snapped else None), []


async def _existing(session: AsyncSession, collector_id: int, client_id: str) -> Any:
    return (
        await session.execute(
            text("SELECT id, content_hash FROM reports WHERE collector_id = :u AND client_id = :c"),
            {"u": collector_id, "c": client_id},
        )
    ).first()


_INSERT = """
INSERT INTO reports (source, client_id, collector_id, created_by, content_hash, kind, category, description,
    input_crs, input_lon, input_lat, accuracy_m, address, place, grid_code, community_code, street_code, county_code,
    area_code, snapped_m, component_code, caller_name, caller_phone, flags, observed_at, geom)
VALUES (:source, :client_id, :collector_id, :created_by, :hash, :kind, :category, :description,
    :crs, :in_lon, :in_lat, :accuracy, :address, :place, :grid, :community, :street, :county,
    :area, :snapped, :component, :caller_name, :caller_phone, (
        -- photo_reused: a photo's sha256 is already on another report
        SELECT coalesce(array_agg(DISTINCT f COLLATE "C" ORDER BY f COLLATE "C"), '{}')
        FROM unnest(CAST(:flags AS text[]) || CASE WHEN EXISTS (
            SELECT 1 FROM photos p WHERE p.sha256 = ANY(CAST(:ph_sha AS bpchar[])) AND p.report_id IS NOT NULL
        ) THEN '{photo_reused}'::text[] ELSE '{}'::text[] END
        -- outside_beat: a collector's report from a grid that is not in their beat
        || CASE WHEN CAST(:collector_id AS integer) IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM beats b WHERE b.grid_code = :grid AND b.collector_id = :collector_id
        ) THEN '{outside_beat}'::text[] ELSE '{}'::text[] END) f),
    coalesce(:observed_at, now()), ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))
ON CONFLICT (collector_id, client_id) DO NOTHING
RETURNING id, received_at, updated_at, observed_at, flags
"""

# The report, its first event (``report`` → ``received``, with the final flags) and its photos
# in one statement.
_INSERT_ALL = Statement(
    f"WITH r AS ({_INSERT}), "
    "e AS (INSERT INTO case_events (report_id, actor_id, role, action, to_status, payload) "
    "      SELECT id, :actor, :role, 'report', 'received', "
    "             CAST(:payload AS jsonb) || jsonb_build_object('flags', r.flags) FROM r), "
    f"p AS (INSERT INTO photos (report_id, purpose, {PHOTO_COLUMNS}) "
    f"      SELECT r.id, 'report', sha, ct, size, w, h, exif, taken, geom FROM r, ({PHOTO_ROWS}) u "
    "      ORDER BY n RETURNING id, sha256, purpose) "
    "SELECT r.id, r.received_at, r.updated_at, r.observed_at, r.flags, "
    "  (SELECT coalesce(json_agg(json_build_object('id', p.id, 'sha256', p.sha256, 'purpose', p.purpose) "
    "   ORDER BY p.id), '[]') FROM p) AS photos FROM r"
)


def _row(data: ReportInput, where: Location | None, lon: float, lat: float, **extra: Any) -> dict[str, Any]:
    return {
        "client_id": data.client_id,
        "kind": data.kind,
        "category": data.category,
        "description": data.description,
        "crs": str(data.crs),
        "in_lon": data.lon,
        "in_lat": data.lat,
        "accuracy": data.accuracy_m,
        "address": data.address,
        "observed_at": data.observed_at,
        "grid": where.grid if where else None,
        "community": where.community[0] if where else None,
        "street": where.street[0] if where else None,
        "county": where.county[0] if where else None,
        "area": where.area[0] if where else None,
        "snapped": where.snapped_m if where else None,
        "lon": lon,
        "lat": lat,
        **extra,
    }


async def _insert(
    session: AsyncSession,
    actor: Principal,
    role: str,
    payload: dict,
    row: dict[str, Any],
    photos: list[CheckedPhoto],
) -> Any:
    """Insert the report, its first event (``payload`` plus the final flags) and its photos
    (their files already durable).

    None when (collector, client_id) exists. One statement: it joins the session's transaction
    when one is open (the caller's commit ends it) and is atomic on its own when none is, as
    on the collectors' path, where it saves the round trips of BEGIN and COMMIT.
    """
    return await _INSERT_ALL.fetchrow(
        await raw_connection(session),
        {
            **row,
            **photo_params(photos),
            "actor": actor.id,
            "role": role,
            "payload": json.dumps(payload, ensure_ascii=False),
        },
    )


def _stored(inserted: Any, row: dict[str, Any], where: Location | None) -> SimpleNamespace:
    """The row ``get`` would read back, from what was just inserted (no second query)."""
    return SimpleNamespace(
        **{
            k: row[k]
            for k in (
                "client_id",
                "source",
                "kind",
                "category",
                "description",
                "address",
                "place",
                "caller_name",
                "caller_phone",
                "collector_id",
            )
        },
        id=inserted["id"],
        status="received",
        lon=row["lon"],
        lat=row["lat"],
        accuracy_m=row["accuracy"],
        grid_code=row["grid"],
        community_code=row["community"],
        street_code=row["street"],
        county_code=row["county"],
        snapped_m=row["snapped"],
        component_code=row["component"],
        community_name=where.community[1] if where else None,
        street_name=where.street[1] if where else None,
        county_name=where.county[1] if where else None,
        area_name=where.area[1] if where else None,
        photos=inserted["photos"],
        flags=inserted["flags"],
        case_number=None,
        case_status=None,
        case_unit_id=None,
        reject_reason=None,
        received_at=inserted["received_at"],
        updated_at=inserted["updated_at"],
        observed_at=inserted["observed_at"],
    )


async def submit(
    session: AsyncSession,
    store: PhotoStore,
    collector: Principal,
    data: ReportInput,
    files: list[tuple[str, StagedFile]],
    index: GridIndex | None = None,
    catalogue: MatterCatalogue | None = None,
) -> tuple[dict[str, Any], bool]:
    """Take a collector's report with its uploaded photos; (the report as stored, created).

    The photos are decoded and made durable in one trip off the event loop once everything
    else is valid, so a refused report stores nothing. Commits before returning.
    """
    assert data.client_id
    where = await locate(session, data.lon, data.lat, data.crs, index)  # 422 beyond 50 m
    matter = await _matter(session, data.category, data.kind, catalogue)
    component_code, flags = await _component(session, matter, data, where)
    photos = await check_photos(files, 1, store=store)
    content_hash = data.content_hash([p.sha256 for p in photos])
    if where.snapped_m is not None:
        flags.append("snapped_to_grid")
    if data.accuracy_m is not None and data.accuracy_m > INACCURATE_M:
        flags.append("location_inaccurate")
    flags += photo_flags(photos, where.lon, where.lat, data.observed_at)
    flags = sorted(set(flags))  # photo_reused and outside_beat are added by the insert
    # The place text is written on first read or at filing (``place_of``), not here: the
    # submission path stays lean for the collectors' 201.
    row = _row(
        data,
        where,
        where.lon,
        where.lat,
        place=None,
        source="collector",
        collector_id=collector.id,
        created_by=collector.id,
        hash=content_hash,
        component=component_code,
        caller_name=None,
        caller_phone=None,
        flags=flags,
    )
    inserted = await _insert(session, collector, "collector", {}, row, photos)
    if inserted is None:
        # The same (collector, client_id) exists: the unique index made this INSERT wait for a
        # racing first submission to commit; now compare contents.
        existing = await _existing(session, collector.id, data.client_id)
        await session.rollback()
        if existing.content_hash != content_hash:
            raise ClientIdConflict(
                f"client_id {data.client_id} was already used for a different report ({existing.id})",
                errors=[{"field": "client_id", "message": "already used for other content"}],
            )
        return await get(session, existing.id, collector, fill_place=False), False
    await session.commit()  # the 201 means: on disk
    return _shape(_stored(inserted, row, where), collector), True


@dataclass(frozen=True)
class Caller:
    name: str | None = None
    phone: str | None = None


async def intake(
    session: AsyncSession,
    store: PhotoStore,
    operator: Principal,
    source: str,
    data: ReportInput,
    caller: Caller,
    files: list[tuple[str, StagedFile]],
    index: GridIndex | None = None,
    catalogue: MatterCatalogue | None = None,
) -> dict[str, Any]:
    """A report from the hotline, the public or an inspection, typed in by an operator.

    Outside the gridded area it is still recorded, flagged ``outside_grids``: no call is lost.
    """
    if source not in SOURCES or source == "collector":
        raise InvalidInput(f"unknown source {source}", errors=[{"field": "source", "message": "unknown"}])
    matter = await _matter(session, data.category, data.kind, catalogue)
    flags: list[str] = []
    try:
        where: Location | None = await locate(session, data.lon, data.lat, data.crs, index)
        lon, lat = where.lon, where.lat
        component_code, flags = await _component(session, matter, data, where)
        if where.snapped_m is not None:
            flags.append("snapped_to_grid")
    except OutsideJurisdiction:
        where, component_code = None, data.component_code
        lon, lat = to_cgcs2000(data.lon, data.lat, data.crs)
        flags.append("outside_grids")
    place = (await reverse(session, lon, lat, where=where))["text"]
    photos = await check_photos(files, 0, store=store)
    flags += photo_flags(photos, lon, lat, data.observed_at)
    flags = sorted(set(flags))  # photo_reused is added by the insert
    row = _row(
        data,
        where,
        lon,
        lat,
        place=place,
        source=source,
        collector_id=None,
        created_by=operator.id,
        hash=None,
        component=component_code,
        caller_name=caller.name,
        caller_phone=caller.phone,
        flags=flags,
    )
    inserted = await _insert(session, operator, _role(operator), {"source": source}, row, photos)
    await session.commit()
    return _shape(_stored(inserted, row, where), operator)


def _role(user: Principal) -> str:
    return "supervisor" if user.has("supervisor") else "operator"


def mask_name(name: str | None) -> str | None:
    return None if not name else name[0] + "*" * max(1, len(name) - 1)


def mask_phone(phone: str | None) -> str | None:
    if not phone:
        return None
    return phone[:3] + "*" * max(0, len(phone) - 7) + phone[-4:] if len(phone) > 7 else "*" * len(phone)


_SELECT = """
SELECT r.*, ST_X(r.geom) AS lon, ST_Y(r.geom) AS lat, c.name AS community_name, s.name AS street_name,
       k.name AS county_name, a.name AS area_name, k2.number AS case_number, k2.status AS case_status,
       k2.unit_id AS case_unit_id, ph.photos
FROM reports r
LEFT JOIN regions c ON c.code = r.community_code
LEFT JOIN regions s ON s.code = r.street_code
LEFT JOIN regions k ON k.code = r.county_code
LEFT JOIN management_areas a ON a.code = r.area_code
LEFT JOIN cases k2 ON k2.id = r.case_id
LEFT JOIN LATERAL (
    SELECT coalesce(json_agg(json_build_object('id', p.id, 'sha256', p.sha256, 'purpose', p.purpose) ORDER BY p.id),
                    '[]') AS photos
    FROM photos p WHERE p.report_id = r.id) ph ON true
"""


def may_see(viewer: Principal, row: Any) -> bool:
    """Visibility of a report: its collector, the command center, planners, the unit of its case."""
    if viewer.has(*READ_ALL):
        return True
    if viewer.has("collector") and row.collector_id == viewer.id:
        return True
    return viewer.has("unit") and row.case_unit_id is not None and row.case_unit_id == viewer.unit_id


def _region(code: str | None, name: str | None) -> dict[str, str] | None:
    return {"code": code, "name": name} if code else None


def _shape(row: Any, viewer: Principal) -> dict[str, Any]:
    sees_caller = viewer.has("operator", "supervisor")
    return {
        "id": row.id,
        "client_id": row.client_id,
        "source": row.source,
        "status": row.status,
        "kind": row.kind,
        "category": row.category,
        "description": row.description,
        "location": {"lon": row.lon, "lat": row.lat},
        "accuracy_m": row.accuracy_m,
        "address": row.address,
        "place": row.place,
        "grid": row.grid_code,
        "community": _region(row.community_code, row.community_name),
        "street": _region(row.street_code, row.street_name),
        "county": _region(row.county_code, row.county_name),
        "district": row.area_name,
        "snapped_m": row.snapped_m,
        "component_code": row.component_code,
        "photos": photo_links(row.photos),
        "flags": list(row.flags),
        "case": {"number": row.case_number, "status": row.case_status} if row.case_number else None,
        "caller": None
        if row.caller_name is None and row.caller_phone is None
        else {
            "name": row.caller_name if sees_caller else mask_name(row.caller_name),
            "phone": row.caller_phone if sees_caller else mask_phone(row.caller_phone),
        },
        "reject_reason": row.reject_reason,
        "received_at": row.received_at.isoformat(),
        "observed_at": row.observed_at.isoformat() if row.observed_at else None,
        "updated_at": row.updated_at.isoformat(),
    }


async def place_of(session: AsyncSession, report_id: int) -> str | None:
    """The report's place text (reverse geocoding), computed and kept the first time it is asked for."""
    row = (
        await session.execute(
            text("SELECT place, ST_X(geom) AS lon, ST_Y(geom) AS lat FROM reports WHERE id = :id"),
            {"id": report_id},
        )
    ).first()
    if row is None or row.place is not None:
        return row.place if row else None
    place = (await reverse(session, row.lon, row.lat))["text"]
    await session.execute(text("UPDATE reports SET place = :p WHERE id = :id"), {"p": place, "id": report_id})
    return place


async def get(
    session: AsyncSession, report_id: int, viewer: Principal, fill_place: bool = True
) -> dict[str, Any]:
    row = (await session.execute(text(f"{_SELECT} WHERE r.id = :id"), {"id": report_id})).first()
    if row is None or not may_see(viewer, row):
        raise NotFound(f"no report {report_id}")  # 404 also for what the caller may not see
    body = _shape(row, viewer)
    if body["place"] is None and fill_place:
        body["place"] = await place_of(session, report_id)
        await session.commit()
    return body


async def changed_since(
    session: AsyncSession, viewer: Principal, since: datetime | None, limit: int = 500
) -> list[dict]:
    """The caller's own reports changed since ``since`` (the app's sync), oldest change first."""
    rows = (
        await session.execute(
            text(
                f"{_SELECT} WHERE (r.collector_id = :u OR r.created_by = :u) "
                "AND (CAST(:since AS timestamptz) IS NULL OR r.updated_at > :since) "
                "ORDER BY r.updated_at, r.id LIMIT :limit"
            ),
            {"u": viewer.id, "since": since, "limit": limit},
        )
    ).all()
    return [_shape(r, viewer) for r in rows]
