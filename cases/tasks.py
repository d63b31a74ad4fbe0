"""Collector tasks: verify (核实) a report on site, check (核查) a handled case on site.

The case workflow creates a task with ``create_task`` (verify for a report, check for a case)
for the collector whose beat holds the grid (``collector_for_grid``) and cancels the open ones
with ``cancel_tasks`` when the report or case moves on; both run in the caller's transaction.

A collector's result is idempotent on (collector, ``client_id``) exactly like a report
(cases/reports.py): the same content again answers with the stored task, other content under
the same ``client_id`` is a ``client_id_conflict``. A task takes one result: once it is done or
cancelled, another result is an ``invalid_transition``. What a result does to its report or
case is not decided here: the workflow registers a hook in ``ON_RESULT``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Principal
from cases.lifecycle import InvalidTransition
from cases.photo_store import PhotoStore
from cases.photos import CheckedPhoto, photo_links, store_photos
from cases.reports import ClientIdConflict
from geo.crs import to_cgcs2000
from geo.errors import InvalidInput, NotFound

KINDS: Final = ("verify", "check")
STATUSES: Final = ("open", "done", "cancelled")
# Which outcomes answer which kind of task, and which need photos as evidence.
OUTCOMES: Final = {"verify": ("confirmed", "not_found"), "check": ("fixed", "not_fixed")}
PHOTOS_REQUIRED: Final = frozenset({"confirmed", "fixed", "not_fixed"})
# Who may read any task; a collector reads their own.
READ_ALL: Final = ("operator", "supervisor", "planner")

ResultHook = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]

ON_RESULT: list[ResultHook] = []
"""Called with (session, result) after a result is recorded, in the same transaction, before
the commit: the case workflow registers here how a result moves its report or case (verify
``confirmed`` → back to the operators' queue, ``not_found`` → rejected; check ``fixed`` →
``checked``, ``not_fixed`` → rework). ``result`` holds the task's ``id``, ``kind``,
``report_id``, ``case_id``, ``collector_id``, ``outcome``, ``note``, ``lon``, ``lat``,
``done_at`` and ``photo_ids``. A hook that raises undoes the whole result (nothing is stored);
a ``DomainError`` reaches the client as its problem (e.g. 409)."""


@dataclass(frozen=True)
class ResultInput:
    """What a collector says about a task: the part ``result`` of API.md."""

    client_id: str
    outcome: str
    lon: float
    lat: float
    crs: str = "wgs84"
    accuracy_m: float | None = None
    note: str = ""

    def content_hash(self, task_id: int, photo_hashes: list[str]) -> str:
        # The task is part of the content: one client_id reused for another task is a conflict.
        body = {**asdict(self), "task_id": task_id, "photos": sorted(photo_hashes)}
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --- for the workflow ---------------------------------------------------------------------------


async def collector_for_grid(session: AsyncSession, grid_code: str) -> int | None:
    """The collector whose beat (责任网格) holds the grid, or None for a grid without one."""
    return await session.scalar(text("SELECT collector_id FROM beats WHERE grid_code = :g"), {"g": grid_code})


async def create_task(
    session: AsyncSession,
    kind: str,
    collector_id: int,
    due_at: datetime,
    report_id: int | None = None,
    case_id: int | None = None,
) -> int:
    """Open a task; its id. A verify task needs its report, a check task its case. No commit."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown task kind {kind!r}", errors=[{"field": "kind", "message": "unknown"}])
    needed = {"verify": ("report_id", report_id), "check": ("case_id", case_id)}[kind]
    if needed[1] is None:
        raise InvalidInput(
            f"a {kind} task needs its {needed[0]}", errors=[{"field": needed[0], "message": "required"}]
        )
    if due_at.tzinfo is None:
        raise InvalidInput("due_at needs an offset", errors=[{"field": "due_at", "message": "naive time"}])
    is_collector = await session.scalar(
        text("SELECT 'collector' = ANY(roles) AND NOT disabled FROM users WHERE id = :u"), {"u": collector_id}
    )
    if not is_collector:
        raise InvalidInput(
            f"user {collector_id} is not an active collector",
            errors=[{"field": "collector_id", "message": "not an active collector"}],
        )
    return await session.scalar(
        text(
            "INSERT INTO collector_tasks (kind, report_id, case_id, collector_id, due_at) "
            "VALUES (:kind, :r, :c, :u, :due) RETURNING id"
        ),
        {"kind": kind, "r": report_id, "c": case_id, "u": collector_id, "due": due_at},
    )


async def cancel_tasks(
    session: AsyncSession, report_id: int | None = None, case_id: int | None = None
) -> int:
    """Cancel the open tasks of a report and/or a case; how many. No commit."""
    if report_id is None and case_id is None:
        raise ValueError("cancel_tasks needs a report_id or a case_id")
    result = await session.execute(
        text(
            "UPDATE collector_tasks SET status = 'cancelled', updated_at = now() "
            "WHERE status = 'open' AND (report_id = :r OR case_id = :c)"
        ),
        {"r": report_id, "c": case_id},
    )
    return result.rowcount  # type: ignore[attr-defined]


# --- reading -------------------------------------------------------------------------------------

_SELECT = """
SELECT t.id, t.kind, t.status, t.report_id, t.case_id, t.collector_id, t.due_at, t.created_at,
       t.updated_at, t.done_at, t.outcome, t.note, t.result_client_id,
       ST_X(t.result_geom) AS result_lon, ST_Y(t.result_geom) AS result_lat,
       (t.status = 'open' AND t.due_at < now()) AS overdue,
       c.number AS case_number, c.status AS case_status, c.kind AS case_kind, c.category AS case_category,
       c.description AS case_description, ST_X(c.geom) AS case_lon, ST_Y(c.geom) AS case_lat,
       c.grid_code AS case_grid, c.report_id AS case_report_id, cr.address AS case_address,
       r.status AS report_status, r.kind AS report_kind, r.category AS report_category,
       r.description AS report_description, ST_X(r.geom) AS report_lon, ST_Y(r.geom) AS report_lat,
       r.grid_code AS report_grid, r.address AS report_address, r.received_at AS report_received_at,
       r.observed_at AS report_observed_at
FROM collector_tasks t
LEFT JOIN cases c ON c.id = t.case_id
LEFT JOIN reports cr ON cr.id = c.report_id
LEFT JOIN reports r ON r.id = t.report_id
"""

# Open tasks first, the most urgent on top; then the rest, the latest change on top.
_ORDER = (
    " ORDER BY t.status <> 'open', CASE WHEN t.status = 'open' THEN t.due_at END, t.updated_at DESC, t.id"
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass
class _Photos:
    """The photos of a page of tasks, by what they belong to."""

    by_report: dict[int, list[dict[str, Any]]]
    by_case: dict[int, list[dict[str, Any]]]
    by_task: dict[int, list[dict[str, Any]]]


async def _photos(session: AsyncSession, rows: list[Any]) -> _Photos:
    reports = list({x for r in rows for x in (r.report_id, r.case_report_id) if x is not None})
    cases = list({r.case_id for r in rows if r.case_id is not None})
    found = await session.execute(
        text(
            "SELECT id, sha256, purpose, report_id, case_id, task_id FROM photos "
            "WHERE report_id = ANY(:r) OR case_id = ANY(:c) OR task_id = ANY(:t) ORDER BY id"
        ),
        {"r": reports, "c": cases, "t": [r.id for r in rows]},
    )
    out = _Photos({}, {}, {})
    for p in found.mappings():
        if p["task_id"] is not None:
            out.by_task.setdefault(p["task_id"], []).append(dict(p))
        elif p["case_id"] is not None:
            out.by_case.setdefault(p["case_id"], []).append(dict(p))
        elif p["report_id"] is not None:
            out.by_report.setdefault(p["report_id"], []).append(dict(p))
    return out


def _shape(row: Any, photos: _Photos) -> dict[str, Any]:
    case = None
    if row.case_id is not None:
        # The case's own photos (the unit's handling) after those of the report it came from.
        case_photos = photos.by_report.get(row.case_report_id, []) + photos.by_case.get(row.case_id, [])
        case = {
            "number": row.case_number,
            "status": row.case_status,
            "kind": row.case_kind,
            "category": row.case_category,
            "description": row.case_description,
            "location": {"lon": row.case_lon, "lat": row.case_lat},
            "address": row.case_address,
            "grid": row.case_grid,
            "photos": photo_links(case_photos),
        }
    report = None
    if row.report_id is not None:
        report = {
            "id": row.report_id,
            "status": row.report_status,
            "kind": row.report_kind,
            "category": row.report_category,
            "description": row.report_description,
            "location": {"lon": row.report_lon, "lat": row.report_lat},
            "address": row.report_address,
            "grid": row.report_grid,
            "photos": photo_links(photos.by_report.get(row.report_id, [])),
            "received_at": _iso(row.report_received_at),
            "observed_at": _iso(row.report_observed_at),
        }
    result = None
    if row.status == "done":
        result = {
            "client_id": row.result_client_id,
            "outcome": row.outcome,
            "note": row.note,
            "location": {"lon": row.result_lon, "lat": row.result_lat}
            if row.result_lon is not None
            else None,
            "photos": photo_links(photos.by_task.get(row.id, [])),
        }
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "case": case,
        "report": report,
        "due_at": _iso(row.due_at),
        "overdue": row.overdue,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "done_at": _iso(row.done_at),
        "result": result,
    }


def _may_see(viewer: Principal, row: Any) -> bool:
    return viewer.has(*READ_ALL) or (viewer.has("collector") and row.collector_id == viewer.id)


async def list_tasks(
    session: AsyncSession, collector_id: int, status: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """A collector's tasks (optionally of one status): open ones first by due time."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}", errors=[{"field": "status", "message": "unknown"}])
    rows = (
        await session.execute(
            text(
                f"{_SELECT} WHERE t.collector_id = :u "
                f"AND (CAST(:status AS text) IS NULL OR t.status = :status){_ORDER} LIMIT :limit"
            ),
            {"u": collector_id, "status": status, "limit": limit},
        )
    ).all()
    photos = await _photos(session, rows)
    return [_shape(r, photos) for r in rows]


async def get_task(session: AsyncSession, task_id: int, viewer: Principal) -> dict[str, Any]:
    """One task; 404 also for a task the viewer may not see (another collector's)."""
    row = (await session.execute(text(f"{_SELECT} WHERE t.id = :id"), {"id": task_id})).first()
    if row is None or not _may_see(viewer, row):
        raise NotFound(f"no task {task_id}")
    return _shape(row, await _photos(session, [row]))


async def own_task_kind(session: AsyncSession, task_id: int, collector: Principal) -> str:
    """The kind of a task of this collector; 404 for any other (a collector never learns of
    another's tasks)."""
    row = (
        await session.execute(
            text("SELECT kind, collector_id FROM collector_tasks WHERE id = :id"), {"id": task_id}
        )
    ).first()
    if row is None or row.collector_id != collector.id:
        raise NotFound(f"no task {task_id}")
    return row.kind


# --- results -------------------------------------------------------------------------------------


def _check_input(kind: str, data: ResultInput, photos: list[CheckedPhoto]) -> tuple[float, float]:
    """422 for an outcome that does not answer this kind of task or missing evidence; the point
    in CGCS2000."""
    if data.outcome not in OUTCOMES[kind]:
        allowed = " or ".join(OUTCOMES[kind])
        raise InvalidInput(
            f"a {kind} task is answered with {allowed}, not {data.outcome}",
            errors=[{"field": "result.outcome", "message": f"must be {allowed} for a {kind} task"}],
        )
    if data.outcome in PHOTOS_REQUIRED and not photos:
        raise InvalidInput(
            f"the outcome {data.outcome} needs at least one photo",
            errors=[{"field": "photos", "message": f"required for {data.outcome}"}],
        )
    return to_cgcs2000(data.lon, data.lat, data.crs)


_RECORD = """
UPDATE collector_tasks
SET status = 'done', outcome = :outcome, note = :note, result_client_id = :client_id,
    result_hash = :hash, result_geom = ST_SetSRID(ST_MakePoint(:lon, :lat), 4490),
    done_at = now(), updated_at = now()
WHERE id = :id
RETURNING id, kind, report_id, case_id, collector_id, outcome, note, done_at,
          ST_X(result_geom) AS lon, ST_Y(result_geom) AS lat
"""


async def submit_result(
    session: AsyncSession,
    store: PhotoStore,
    collector: Principal,
    task_id: int,
    data: ResultInput,
    photos: list[CheckedPhoto],
) -> tuple[dict[str, Any], bool]:
    """Record a collector's result of their task; (the task as the API shows it, recorded).

    ``recorded`` is False for a replay of a stored result (the caller discards the uploads).
    Runs the ``ON_RESULT`` hooks and commits before returning.
    """
    kind = await own_task_kind(session, task_id, collector)  # 404 before any input error
    lon, lat = _check_input(kind, data, photos)
    content_hash = data.content_hash(task_id, [p.sha256 for p in photos])
    # Serialise results under the same (collector, client_id): the later waits for the first.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"task-result:{collector.id}:{data.client_id}"},
    )
    existing = (
        await session.execute(
            text(
                "SELECT id, result_hash FROM collector_tasks WHERE collector_id = :u AND result_client_id = :c"
            ),
            {"u": collector.id, "c": data.client_id},
        )
    ).first()
    if existing is not None:
        await session.rollback()
        if existing.result_hash != content_hash:
            raise ClientIdConflict(
                f"client_id {data.client_id} was already used for another result (task {existing.id})",
                errors=[{"field": "client_id", "message": "already used for other content"}],
            )
        return await get_task(session, existing.id, collector), False
    # The row lock orders two different results racing for one task: the later sees it done.
    status = await session.scalar(
        text("SELECT status FROM collector_tasks WHERE id = :id FOR UPDATE"), {"id": task_id}
    )
    if status != "open":
        await session.rollback()
        raise InvalidTransition(f"task {task_id} is {status}: it takes no further result", allowed_actions=[])
    row = (
        await session.execute(
            text(_RECORD),
            {
                "id": task_id,
                "outcome": data.outcome,
                "note": data.note,
                "client_id": data.client_id,
                "hash": content_hash,
                "lon": lon,
                "lat": lat,
            },
        )
    ).one()
    photo_ids = await store_photos(session, store, photos, purpose=kind, task_id=task_id)
    result = {**row._asdict(), "photo_ids": photo_ids}
    for hook in ON_RESULT:
        await hook(session, result)
    await session.commit()  # the 200 means: on disk
    return await get_task(session, task_id, collector), True
