"""Carrying out the lifecycle: every action on a report or a case, in one transaction each.

The order of checks is API.md's: role (403) → visibility (404) → input (422) → state (409).
A case row is locked (``FOR UPDATE``) for the action, so of two racing state changes exactly
one wins; a client's ``version`` must match when given. Every action appends one event to
``case_events``; the case row is the projection of those events.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases import deadlines
from cases.accounts import Principal
from cases.calendar_days import deadline_class, load_calendar, unit_hours
from cases.lifecycle import (
    ACTIONS,
    OPEN_CASE,
    REJECT_REASONS,
    RETURN_REASONS,
    InvalidTransition,
    VersionConflict,
    available,
)
from cases.photo_store import PhotoStore
from cases.photos import CheckedPhoto, store_photos
from cases.reports import place_of
from cases.rules import CaseFacts, case_facts, suggest
from cases.tasks import ON_RESULT, cancel_tasks, collector_for_grid, create_task
from geo.errors import Conflict, Forbidden, InvalidInput, NotFound


class DeadlinePassed(Conflict):
    code = "deadline_passed"
    title = "The deadline has passed"


EventHook = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]
# Called for every event inside its transaction (the outbox to units registers here).
EVENT_HOOKS: list[EventHook] = []


def now() -> datetime:
    return datetime.now(UTC)


# --- who may act --------------------------------------------------------------------------


async def _setting(session: AsyncSession, key: str, default: Any) -> Any:
    value = await session.scalar(text("SELECT value FROM settings WHERE key = :k"), {"k": key})
    return default if value is None else value


async def _role_for(session: AsyncSession, action: str, user: Principal) -> str:
    """The role the user acts in (403 when none allows the action)."""
    roles = set(ACTIONS[action].roles)
    if action == "file":
        roles &= set(await _setting(session, "filing_roles", ["operator", "supervisor"]))
    if "operator" in roles:
        roles.add("supervisor")  # a 值班长 does everything an operator does
    held = sorted(roles.intersection(user.roles), key=["supervisor", "operator", "unit", "collector"].index)
    if not held:
        raise Forbidden(f"{action} needs one of the roles: {', '.join(sorted(roles))}")
    return held[0]


# --- the stage clock ----------------------------------------------------------------------


@dataclass(frozen=True)
class StageClock:
    """Deadline, yellow-light time and total counting time of the stage a case enters."""

    deadline_at: datetime | None
    yellow_at: datetime | None
    total_s: float | None
    provisional: bool = False


async def _clock(
    session: AsyncSession, class_code: str, start: datetime, unit_id: int | None, extra: float = 0.0
) -> StageClock:
    unit, amount = await deadline_class(session, class_code)
    hours = await unit_hours(session, unit_id)
    calendar = await load_calendar(session)
    due = deadlines.add(start, float(amount) + extra, unit, hours, calendar)
    return _with_yellow(start, due, unit, hours, calendar)


def _with_yellow(start: datetime, due: Any, unit: str, hours: Any, calendar: Any) -> StageClock:
    total = deadlines.counted_seconds(start, due.at, unit, hours, calendar)
    counting = "natural_hour" if unit == "natural_hour" else "working_hour"
    yellow = deadlines.add(start, 0.8 * total / 3600, counting, hours, calendar)
    return StageClock(due.at, yellow.at, total, due.provisional or yellow.provisional)


# --- events and the case row ---------------------------------------------------------------


async def _event(
    session: AsyncSession,
    *,
    case_id: int | None,
    report_id: int | None,
    user: Principal,
    role: str,
    action: str,
    from_status: str | None,
    to_status: str | None,
    payload: dict[str, Any],
) -> int:
    """Append one event; the hooks (e.g. the outbox to units) run in the same transaction."""
    event_id = await session.scalar(
        text(
            "INSERT INTO case_events (case_id, report_id, actor_id, role, action, from_status, to_status, payload) "
            "VALUES (:c, :r, :a, :role, :action, :f, :t, CAST(:p AS jsonb)) RETURNING id"
        ),
        {
            "c": case_id,
            "r": report_id,
            "a": user.id,
            "role": role,
            "action": action,
            "f": from_status,
            "t": to_status,
            "p": json.dumps(payload, ensure_ascii=False, default=str),
        },
    )
    event = {
        "id": event_id,
        "case_id": case_id,
        "report_id": report_id,
        "action": action,
        "from_status": from_status,
        "to_status": to_status,
        "payload": payload,
    }
    for hook in EVENT_HOOKS:
        await hook(session, event)
    return event_id


async def _update_case(session: AsyncSession, case_id: int, **values: Any) -> None:
    """Set columns of a case; the version moves on with every change."""
    sets, params = [], {"id": case_id}
    for key, value in values.items():
        if isinstance(value, dict):  # jsonb
            sets.append(f"{key} = CAST(:{key} AS jsonb)")
            params[key] = json.dumps(value, ensure_ascii=False, default=str)
        else:
            sets.append(f"{key} = :{key}")
            params[key] = value
    sets.append("version = version + 1, updated_at = now()")
    await session.execute(text(f"UPDATE cases SET {', '.join(sets)} WHERE id = :id"), params)


async def _report_event(
    session: AsyncSession,
    report: Any,
    user: Principal,
    role: str,
    action: str,
    to_status: str,
    payload: dict[str, Any],
    case_id: int | None = None,
) -> int:
    """Append the event of an action on a report (file, reject, merge, verification, self-handling)."""
    return await _event(
        session,
        case_id=case_id,
        report_id=report.id,
        user=user,
        role=role,
        action=action,
        from_status=report.status,
        to_status=to_status,
        payload=payload,
    )


async def _move(
    session: AsyncSession,
    case: Any,
    user: Principal,
    role: str,
    action: str,
    payload: dict[str, Any],
    to_status: str | None = None,
    **columns: Any,
) -> None:
    """Project one case action: set its columns (status and stage too, when it changes the
    status) and append its event."""
    if to_status is not None:
        columns.update(status=to_status, stage=to_status)
    await _update_case(session, case.id, **columns)
    await _event(
        session,
        case_id=case.id,
        report_id=None,
        user=user,
        role=role,
        action=action,
        from_status=case.status,
        to_status=to_status or case.status,
        payload=payload,
    )


async def _lock_case(session: AsyncSession, number: str, user: Principal) -> Any:
    row = (
        await session.execute(text("SELECT * FROM cases WHERE number = :n FOR UPDATE"), {"n": number})
    ).first()
    if row is None or (
        user.has("unit") and not user.has("operator", "supervisor") and row.unit_id != user.unit_id
    ):
        raise NotFound(f"no case {number}")  # a unit never learns of other units' cases
    return row


async def _lock_report(session: AsyncSession, report_id: int, user: Principal) -> Any:
    row = (
        await session.execute(text("SELECT * FROM reports WHERE id = :id FOR UPDATE"), {"id": report_id})
    ).first()
    if row is None or (not user.has("operator", "supervisor") and row.collector_id != user.id):
        raise NotFound(f"no report {report_id}")
    return row


def _check_state(action: str, status: str, row: Any, version: int | None, on: str = "case") -> None:
    extension = bool(getattr(row, "extension", None))
    signed = getattr(row, "signed_at", None) is not None
    allowed = available(on, status, extension_pending=extension, signed=signed)
    if action not in allowed:
        raise InvalidTransition(
            f"{action} is not possible while the {on} is {status}",
            allowed_actions=allowed,
            current_status=status,
        )
    if version is not None and getattr(row, "version", version) != version:
        raise VersionConflict(
            f"the {on} is at version {row.version}, not {version}",
            allowed_actions=allowed,
            current_status=status,
        )


# --- report actions -------------------------------------------------------------------------


async def _new_number(session: AsyncSession) -> str:
    prefix = await _setting(session, "case_number_prefix", "HH")
    n = await session.scalar(text("SELECT nextval('case_number_seq')"))
    return f"{prefix}{now().astimezone(deadlines.TZ).year}-{n:07d}"


async def _create_case(session: AsyncSession, report: Any, status: str) -> tuple[int, str]:
    await place_of(session, report.id)  # the case carries the report's place text
    number = await _new_number(session)
    case_id = await session.scalar(
        text(
            "INSERT INTO cases (number, status, report_id, kind, category, description, grid_code, community_code, "
            "street_code, county_code, area_code, component_code, flags, geom, stage, stage_started_at, place) "
            "SELECT :number, :status, r.id, r.kind, r.category, r.description, r.grid_code, r.community_code, "
            "r.street_code, r.county_code, r.area_code, r.component_code, r.flags, r.geom, :status, now(), r.place "
            "FROM reports r WHERE r.id = :r RETURNING id"
        ),
        {"number": number, "status": status, "r": report.id},
    )
    await session.execute(
        text("UPDATE reports SET status = 'filed', case_id = :c, updated_at = now() WHERE id = :r"),
        {"c": case_id, "r": report.id},
    )
    return case_id, number


async def file_report(
    session: AsyncSession,
    user: Principal,
    report_id: int,
    version: int | None = None,
    note: str | None = None,
) -> str:
    """立案: the report becomes a case, whose clock now runs for dispatch."""
    role = await _role_for(session, "file", user)
    report = await _lock_report(session, report_id, user)
    _check_state("file", report.status, report, None, "report")
    case_id, number = await _create_case(session, report, "filed")
    clock = await _clock(session, "stage_dispatch", now(), None)
    await _update_case(
        session,
        case_id,
        deadline_at=clock.deadline_at,
        yellow_at=clock.yellow_at,
        stage_total_s=clock.total_s,
        deadline_provisional=clock.provisional,
    )
    await _report_event(
        session,
        report,
        user,
        role,
        "file",
        "filed",
        {"note": note, "deadline": clock.deadline_at},
        case_id=case_id,
    )
    await cancel_tasks(session, report_id=report.id)
    await session.commit()
    return number


async def reject_report(
    session: AsyncSession, user: Principal, report_id: int, reason: str, note: str | None = None
) -> None:
    """不予立案, with a reason code."""
    role = await _role_for(session, "reject", user)
    report = await _lock_report(session, report_id, user)
    if reason not in REJECT_REASONS:
        raise InvalidInput(
            f"unknown reason {reason}", errors=[{"field": "reason", "message": f"one of {REJECT_REASONS}"}]
        )
    _check_state("reject", report.status, report, None, "report")
    await _reject(session, user, role, report, reason, note)
    await cancel_tasks(session, report_id=report.id)
    await session.commit()


async def _reject(
    session: AsyncSession, user: Principal, role: str, report: Any, reason: str, note: str | None
) -> None:
    await session.execute(
        text(
            "UPDATE reports SET status = 'rejected', reject_reason = :reason, updated_at = now() WHERE id = :r"
        ),
        {"reason": reason, "r": report.id},
    )
    await _report_event(
        session, report, user, role, "reject", "rejected", {"reason": reason, "note": note}, case_id=None
    )


async def merge_report(
    session: AsyncSession, user: Principal, report_id: int, number: str, note: str | None = None
) -> str:
    """Attach a report to an open case as a repeat report (重复上报)."""
    role = await _role_for(session, "merge", user)
    report = await _lock_report(session, report_id, user)
    case = (
        await session.execute(text("SELECT id, status FROM cases WHERE number = :n"), {"n": number})
    ).first()
    if case is None:
        raise InvalidInput(f"no case {number}", errors=[{"field": "case", "message": "unknown case"}])
    if case.status not in OPEN_CASE:
        raise InvalidInput(
            f"case {number} is {case.status}", errors=[{"field": "case", "message": "not open"}]
        )
    _check_state("merge", report.status, report, None, "report")
    await session.execute(
        text("UPDATE reports SET status = 'merged', case_id = :c, updated_at = now() WHERE id = :r"),
        {"c": case.id, "r": report.id},
    )
    await _update_case(session, case.id)
    await _report_event(
        session, report, user, role, "merge", "merged", {"note": note, "report": report.id}, case_id=case.id
    )
    await cancel_tasks(session, report_id=report.id)
    await session.commit()
    return number


async def request_verification(
    session: AsyncSession, user: Principal, report_id: int, note: str | None = None
) -> int:
    """核实: a verify task for the collector whose beat holds the report's grid."""
    role = await _role_for(session, "request_verification", user)
    report = await _lock_report(session, report_id, user)
    _check_state("request_verification", report.status, report, None, "report")
    collector = await collector_for_grid(session, report.grid_code) if report.grid_code else None
    if collector is None:
        raise InvalidInput(
            "the report lies in no patrolled grid: nobody can verify it on site",
            errors=[{"field": "report", "message": "no beat owner"}],
        )
    clock = await _clock(session, "stage_verify", now(), None)
    task_id = await create_task(session, "verify", collector, clock.deadline_at, report_id=report.id)
    await session.execute(
        text("UPDATE reports SET status = 'verifying', updated_at = now() WHERE id = :r"), {"r": report.id}
    )
    await _report_event(
        session,
        report,
        user,
        role,
        "request_verification",
        "verifying",
        {"task": task_id, "collector": collector, "due_at": clock.deadline_at, "note": note},
        case_id=None,
    )
    await session.commit()
    return task_id


async def self_handle(
    session: AsyncSession,
    store: PhotoStore,
    user: Principal,
    report_id: int,
    note: str | None,
    photos: list[CheckedPhoto],
) -> str:
    """自处理: a collector fixed a trivial problem on the spot; the case is closed at once."""
    role = await _role_for(session, "self_handle", user)
    report = await _lock_report(session, report_id, user)
    if report.collector_id != user.id:
        raise NotFound(f"no report {report_id}")
    if not photos:
        raise InvalidInput(
            "send the photo after the fix", errors=[{"field": "photos", "message": "required"}]
        )
    _check_state("self_handle", report.status, report, None, "report")
    case_id, number = await _create_case(session, report, "closed")
    await _update_case(session, case_id, closed_at=now(), handled_at=now(), stage="closed")
    ids = await store_photos(session, store, photos, purpose="self_handle", case_id=case_id)
    await _report_event(
        session, report, user, role, "self_handle", "closed", {"note": note, "photos": ids}, case_id=case_id
    )
    await session.commit()
    return number


# --- case actions ---------------------------------------------------------------------------


@dataclass
class CaseInput:
    """The body of a case action; which fields count depends on the action."""

    version: int | None = None
    note: str | None = None
    reason: str | None = None
    unit: str | None = None
    deadline_class: str | None = None
    priority: int | None = None
    amount: float | None = None
    amount_unit: str = "working_day"
    extra: dict[str, Any] = field(default_factory=dict)


async def _unit_id(session: AsyncSession, code: str) -> int:
    unit_id = await session.scalar(text("SELECT id FROM units WHERE code = :c AND active"), {"c": code})
    if unit_id is None:
        raise InvalidInput(
            f"unknown unit {code}", errors=[{"field": "unit", "message": "unknown or inactive unit"}]
        )
    return unit_id


def facts(row: Any) -> CaseFacts:
    """What the dispatch rules see of a case row (point, class, place, time)."""
    return case_facts(row)


async def act(
    session: AsyncSession,
    store: PhotoStore,
    user: Principal,
    number: str,
    action: str,
    body: CaseInput,
    photos: list[CheckedPhoto] | None = None,
) -> None:
    """Carry out a case action (dispatch, sign, return, …); commits."""
    if action not in ACTIONS or ACTIONS[action].on != "case":
        raise NotFound(f"no action {action}")
    role = await _role_for(session, action, user)
    case = await _lock_case(session, number, user)
    handler = _HANDLERS[action]
    await handler(session, store, user, role, case, body, photos or [])
    await session.commit()


async def _dispatch(session, store, user, role, case, body, photos) -> None:
    decision: dict[str, Any] | None = None
    if body.unit:
        unit_code, unit_id = body.unit, await _unit_id(session, body.unit)
        class_code = body.deadline_class
    else:
        suggestion = await suggest(session, facts(case))
        decision = suggestion.as_dict()
        if suggestion.unit_code is None:
            raise InvalidInput(
                "no dispatch rule matched this case: name the unit",
                errors=[{"field": "unit", "message": "required: no rule matched"}],
            )
        unit_code, unit_id = suggestion.unit_code, await _unit_id(session, suggestion.unit_code)
        class_code = body.deadline_class or suggestion.deadline_class
    class_code = class_code or await session.scalar(
        text("SELECT deadline_class FROM matter_classes WHERE code = :c"), {"c": case.category}
    )
    if body.deadline_class and not await session.scalar(
        text("SELECT 1 FROM deadline_classes WHERE code = :c"), {"c": body.deadline_class}
    ):
        raise InvalidInput(
            f"unknown deadline class {body.deadline_class}",
            errors=[{"field": "deadline_class", "message": "unknown"}],
        )
    _check_state("dispatch", case.status, case, body.version)
    clock = await _clock(session, class_code, now(), unit_id)
    await _move(
        session,
        case,
        user,
        role,
        "dispatch",
        {
            "unit": unit_code,
            "deadline_class": class_code,
            "deadline": clock.deadline_at,
            "provisional": clock.provisional,
            "rule": decision,
            "note": body.note,
        },
        to_status="dispatched",
        unit_id=unit_id,
        deadline_class=class_code,
        priority=body.priority or (decision or {}).get("priority") or case.priority,
        dispatched_at=now(),
        signed_at=None,
        stage_started_at=now(),
        deadline_at=clock.deadline_at,
        yellow_at=clock.yellow_at,
        stage_total_s=clock.total_s,
        deadline_provisional=clock.provisional,
        handle_deadline_at=clock.deadline_at,
        rule_id=(decision or {}).get("rule_id"),
        rule_set=(decision or {}).get("rule_set"),
        extension=None,
    )


async def _sign(session, store, user, role, case, body, photos) -> None:
    _check_state("sign", case.status, case, body.version)
    await _move(session, case, user, role, "sign", {"note": body.note}, signed_at=now())


async def _subdispatch(session, store, user, role, case, body, photos) -> None:
    """二级派遣: a dispatch center unit hands its case to one of its child units, with a
    deadline inside its own."""
    center = (
        await session.execute(
            text("SELECT code, dispatch_center FROM units WHERE id = :u"), {"u": case.unit_id}
        )
    ).one()
    if not center.dispatch_center:
        raise Forbidden(f"{center.code} is not a dispatch center: it cannot re-dispatch")
    if not body.unit:
        raise InvalidInput("name the child unit", errors=[{"field": "unit", "message": "required"}])
    child_id = await _unit_id(session, body.unit)
    if not await session.scalar(
        text("SELECT 1 FROM units WHERE id = :c AND parent_id = :p"), {"c": child_id, "p": case.unit_id}
    ):
        raise InvalidInput(
            f"{body.unit} is not a unit under {center.code}",
            errors=[{"field": "unit", "message": "not a child unit"}],
        )
    _check_state("subdispatch", case.status, case, body.version)
    clock = await _clock(session, body.deadline_class or case.deadline_class, now(), child_id)
    deadline_at, yellow_at = clock.deadline_at, clock.yellow_at
    if case.deadline_at is not None and deadline_at > case.deadline_at:
        deadline_at = case.deadline_at  # inside the parent's deadline
        yellow_at = min(yellow_at, deadline_at)
    await _move(
        session,
        case,
        user,
        role,
        "subdispatch",
        {
            "from_unit": center.code,
            "unit": body.unit,
            "deadline": deadline_at,
            "parent_deadline": case.deadline_at,
            "note": body.note,
        },
        unit_id=child_id,
        parent_unit_id=case.unit_id,
        parent_deadline_at=case.deadline_at,
        signed_at=None,
        stage_started_at=now(),
        deadline_at=deadline_at,
        yellow_at=yellow_at,
        stage_total_s=clock.total_s,
        handle_deadline_at=deadline_at,
    )


async def _return_to_center(
    session: AsyncSession, user: Principal, role: str, case: Any, body: CaseInput
) -> None:
    """A child unit's 回退 goes back to the dispatch center that handed the case down."""
    child = await session.scalar(text("SELECT code FROM units WHERE id = :u"), {"u": case.unit_id})
    parent = await session.scalar(text("SELECT code FROM units WHERE id = :u"), {"u": case.parent_unit_id})
    await _move(
        session,
        case,
        user,
        role,
        "return",
        {"unit": child, "to_unit": parent, "level": 2, "reason": body.reason, "note": body.note},
        unit_id=case.parent_unit_id,
        parent_unit_id=None,
        deadline_at=case.parent_deadline_at,
        handle_deadline_at=case.parent_deadline_at,
        parent_deadline_at=None,
        signed_at=None,
        return_count=case.return_count + 1,
    )


async def _return(session, store, user, role, case, body, photos) -> None:
    if body.reason not in RETURN_REASONS:
        raise InvalidInput(
            "a return needs a reason", errors=[{"field": "reason", "message": f"one of {RETURN_REASONS}"}]
        )
    _check_state("return", case.status, case, body.version)
    if case.parent_unit_id is not None:
        await _return_to_center(session, user, role, case, body)
        return
    clock = await _clock(session, "stage_dispatch", now(), None)
    unit = await session.scalar(text("SELECT code FROM units WHERE id = :u"), {"u": case.unit_id})
    await _move(
        session,
        case,
        user,
        role,
        "return",
        {"unit": unit, "reason": body.reason, "note": body.note, "rule_id": case.rule_id},
        to_status="returned",
        unit_id=None,
        signed_at=None,
        return_count=case.return_count + 1,
        stage_started_at=now(),
        deadline_at=clock.deadline_at,
        yellow_at=clock.yellow_at,
        stage_total_s=clock.total_s,
        deadline_provisional=clock.provisional,
        extension=None,
        flags=sorted({*case.flags, "returned"}),
    )


async def _request_extension(session, store, user, role, case, body, photos) -> None:
    if (
        not body.amount
        or body.amount <= 0
        or body.amount_unit not in ("natural_hour", "working_hour", "working_day")
    ):
        raise InvalidInput(
            "an extension needs a positive amount of natural_hour, working_hour or working_day",
            errors=[{"field": "amount", "message": "positive number required"}],
        )
    if not body.reason:
        raise InvalidInput("an extension needs a reason", errors=[{"field": "reason", "message": "required"}])
    _check_state("request_extension", case.status, case, body.version)
    if case.deadline_at is not None and case.deadline_at <= now():
        raise DeadlinePassed(
            "an extension must be asked for before the deadline",
            allowed_actions=available("case", case.status, signed=case.signed_at is not None),
        )
    request = {
        "amount": body.amount,
        "unit": body.amount_unit,
        "reason": body.reason,
        "requested_at": now().isoformat(),
    }
    await _update_case(session, case.id, extension=request)
    await _event(
        session,
        case_id=case.id,
        report_id=None,
        user=user,
        role=role,
        action="request_extension",
        from_status=case.status,
        to_status=case.status,
        payload=request,
    )


async def _approve_extension(session, store, user, role, case, body, photos) -> None:
    _check_state("approve_extension", case.status, case, body.version)
    request = case.extension
    hours = await unit_hours(session, case.unit_id)
    calendar = await load_calendar(session)
    due = deadlines.extend(case.deadline_at, request["amount"], request["unit"], hours, calendar)
    unit, _ = await deadline_class(session, case.deadline_class)
    clock = _with_yellow(case.stage_started_at, due, unit, hours, calendar)
    await _move(
        session,
        case,
        user,
        role,
        "approve_extension",
        {**request, "deadline": clock.deadline_at, "note": body.note},
        extension=None,
        deadline_at=clock.deadline_at,
        yellow_at=clock.yellow_at,
        stage_total_s=clock.total_s,
        handle_deadline_at=clock.deadline_at,
        deadline_provisional=clock.provisional,
        flags=sorted({*case.flags, "extended"}),
    )


async def _deny_extension(session, store, user, role, case, body, photos) -> None:
    _check_state("deny_extension", case.status, case, body.version)
    await _update_case(session, case.id, extension=None)
    await _event(
        session,
        case_id=case.id,
        report_id=None,
        user=user,
        role=role,
        action="deny_extension",
        from_status=case.status,
        to_status=case.status,
        payload={**case.extension, "note": body.note},
    )


async def _suspend(session, store, user, role, case, body, photos) -> None:
    if not body.reason:
        raise InvalidInput("a suspension needs a reason", errors=[{"field": "reason", "message": "required"}])
    _check_state("suspend", case.status, case, body.version)
    unit, _ = await deadline_class(session, case.deadline_class)
    left = deadlines.remaining(
        now(), case.deadline_at, unit, await unit_hours(session, case.unit_id), await load_calendar(session)
    )
    await _move(
        session,
        case,
        user,
        role,
        "suspend",
        {"reason": body.reason, "note": body.note, "left_s": left},
        to_status="suspended",
        frozen_left_s=left,
        deadline_at=None,
        yellow_at=None,
    )


async def _resume(session, store, user, role, case, body, photos) -> None:
    _check_state("resume", case.status, case, body.version)
    unit, _ = await deadline_class(session, case.deadline_class)
    hours = await unit_hours(session, case.unit_id)
    calendar = await load_calendar(session)
    left = case.frozen_left_s or 0.0
    due = deadlines.resume(now(), left, unit, hours, calendar)
    counting = "natural_hour" if unit == "natural_hour" else "working_hour"
    used = (case.stage_total_s or left) - left
    to_yellow = max(0.0, 0.8 * (case.stage_total_s or left) - used)
    yellow = deadlines.add(now(), to_yellow / 3600, counting, hours, calendar)
    await _move(
        session,
        case,
        user,
        role,
        "resume",
        {"deadline": due.at, "note": body.note},
        to_status="dispatched",
        frozen_left_s=None,
        deadline_at=due.at,
        yellow_at=yellow.at,
        handle_deadline_at=due.at,
        deadline_provisional=due.provisional,
    )


async def _handle(session, store, user, role, case, body, photos) -> None:
    if not photos:
        raise InvalidInput(
            "report back with photos of the result", errors=[{"field": "photos", "message": "required"}]
        )
    _check_state("handle", case.status, case, body.version)
    collector = await collector_for_grid(session, case.grid_code) if case.grid_code else None
    clock = await _clock(session, "stage_check", now(), None)
    ids = await store_photos(session, store, photos, purpose="handle", case_id=case.id)
    task_id = None
    if collector is not None:
        task_id = await create_task(session, "check", collector, clock.deadline_at, case_id=case.id)
    await _move(
        session,
        case,
        user,
        role,
        "handle",
        {"note": body.note, "photos": ids, "check_task": task_id, "collector": collector},
        to_status="handled",
        handled_at=now(),
        stage_started_at=now(),
        deadline_at=clock.deadline_at,
        yellow_at=clock.yellow_at,
        stage_total_s=clock.total_s,
        deadline_provisional=clock.provisional,
    )


async def _close(session, store, user, role, case, body, photos) -> None:
    _check_state("close", case.status, case, body.version)
    await _close_case(session, user, role, case, body.note)


async def _close_case(session: AsyncSession, user: Principal, role: str, case: Any, note: str | None) -> None:
    await _update_case(
        session, case.id, status="closed", stage="closed", closed_at=now(), deadline_at=None, yellow_at=None
    )
    await _event(
        session,
        case_id=case.id,
        report_id=None,
        user=user,
        role=role,
        action="close",
        from_status=case.status,
        to_status="closed",
        payload={"note": note},
    )


async def _cancel(session, store, user, role, case, body, photos) -> None:
    if not body.reason:
        raise InvalidInput(
            "a cancellation needs a reason", errors=[{"field": "reason", "message": "required"}]
        )
    _check_state("cancel", case.status, case, body.version)
    cancelled = await cancel_tasks(session, case_id=case.id)
    await _move(
        session,
        case,
        user,
        role,
        "cancel",
        {"reason": body.reason, "note": body.note, "tasks_cancelled": cancelled},
        to_status="cancelled",
        closed_at=now(),
        deadline_at=None,
        yellow_at=None,
    )


async def _escalate(session, store, user, role, case, body, photos) -> None:
    if not body.note:
        raise InvalidInput("督办 needs a note", errors=[{"field": "note", "message": "required"}])
    _check_state("escalate", case.status, case, body.version)
    await _update_case(session, case.id, escalated=True, flags=sorted({*case.flags, "escalated"}))
    await _event(
        session,
        case_id=case.id,
        report_id=None,
        user=user,
        role=role,
        action="escalate",
        from_status=case.status,
        to_status=case.status,
        payload={"note": body.note},
    )


_HANDLERS = {
    "dispatch": _dispatch,
    "subdispatch": _subdispatch,
    "sign": _sign,
    "return": _return,
    "request_extension": _request_extension,
    "approve_extension": _approve_extension,
    "deny_extension": _deny_extension,
    "suspend": _suspend,
    "resume": _resume,
    "handle": _handle,
    "close": _close,
    "cancel": _cancel,
    "escalate": _escalate,
}


# --- results of collectors' tasks ----------------------------------------------------------


async def on_task_result(session: AsyncSession, result: dict[str, Any]) -> None:
    """How a verify (核实) or check (核查) result moves its report or case (registered in cases.tasks)."""
    collector = Principal(result["collector_id"], "", "", frozenset({"collector"}), None)
    payload = {
        "task": result["id"],
        "outcome": result["outcome"],
        "note": result.get("note"),
        "photos": result.get("photo_ids", []),
    }
    if result["kind"] == "verify" and result.get("report_id"):
        report = (
            await session.execute(
                text("SELECT * FROM reports WHERE id = :id FOR UPDATE"), {"id": result["report_id"]}
            )
        ).first()
        if report is None or report.status != "verifying":
            return  # filed or rejected meanwhile: the result is kept on the task only
        if result["outcome"] == "confirmed":
            await session.execute(
                text(
                    "UPDATE reports SET status = 'received', verified = true, "
                    "flags = array(SELECT DISTINCT unnest(flags || ARRAY['verified'])), updated_at = now() "
                    "WHERE id = :r"
                ),
                {"r": report.id},
            )
            await _event(
                session,
                case_id=None,
                report_id=report.id,
                user=collector,
                role="collector",
                action="verify_result",
                from_status="verifying",
                to_status="received",
                payload=payload,
            )
        else:
            await _reject(session, collector, "collector", report, "not_found_on_site", result.get("note"))
    elif result["kind"] == "check" and result.get("case_id"):
        case = (
            await session.execute(
                text("SELECT * FROM cases WHERE id = :id FOR UPDATE"), {"id": result["case_id"]}
            )
        ).first()
        if case is None or case.status != "handled":
            return
        if result["outcome"] == "fixed":
            clock = await _clock(session, "stage_close", now(), None)
            await _update_case(
                session,
                case.id,
                status="checked",
                stage="checked",
                stage_started_at=now(),
                deadline_at=clock.deadline_at,
                yellow_at=clock.yellow_at,
                stage_total_s=clock.total_s,
            )
            await _event(
                session,
                case_id=case.id,
                report_id=None,
                user=collector,
                role="collector",
                action="check_result",
                from_status="handled",
                to_status="checked",
                payload=payload,
            )
            if await _setting(session, "auto_close_on_fixed", False):
                checked = (
                    await session.execute(text("SELECT * FROM cases WHERE id = :id"), {"id": case.id})
                ).first()
                await _close_case(
                    session, collector, "collector", checked, "closed automatically after a passed check"
                )
        else:  # 返工: same unit, a new handling deadline
            clock = await _clock(session, case.deadline_class, now(), case.unit_id)
            await _update_case(
                session,
                case.id,
                status="dispatched",
                stage="dispatched",
                stage_started_at=now(),
                deadline_at=clock.deadline_at,
                yellow_at=clock.yellow_at,
                stage_total_s=clock.total_s,
                handle_deadline_at=clock.deadline_at,
                rework_count=case.rework_count + 1,
                signed_at=None,
                flags=sorted({*case.flags, "rework"}),
            )
            await _event(
                session,
                case_id=case.id,
                report_id=None,
                user=collector,
                role="collector",
                action="check_result",
                from_status="handled",
                to_status="dispatched",
                payload={**payload, "rework": case.rework_count + 1, "deadline": clock.deadline_at},
            )


# The workflow decides what a collector's result means for its report or case.
if on_task_result not in ON_RESULT:
    ON_RESULT.append(on_task_result)
