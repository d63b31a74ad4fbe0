"""The working-time calendar's data: the days administrators enter (``calendar_days``), the
deadline classes and the units' working hours, read into the pure types of ``cases.deadlines``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.deadlines import DEFAULT_HOURS, Deadline, Unit, WorkCalendar, WorkingHours, add
from geo.errors import InvalidInput, NotFound

# The years an administrator may enter; the package starts in 2004.
MIN_YEAR: Final = 2000
MAX_YEAR: Final = 2100


class Entry(NamedTuple):
    """A day an administrator enters, with the holiday's name (元旦, 春节调休, …)."""

    day: date
    name: str | None = None


Entries = Iterable[Entry | tuple[date, str | None]]


async def load_calendar(session: AsyncSession) -> WorkCalendar:
    """The calendar with every administrator entry (a few dozen rows a year)."""
    rows = (await session.execute(text("SELECT day, kind FROM calendar_days"))).all()
    return WorkCalendar(
        holidays={r.day for r in rows if r.kind == "holiday"},
        workdays={r.day for r in rows if r.kind == "workday"},
    )


def _check_year(year: int) -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidInput(
            f"the year must lie in {MIN_YEAR}–{MAX_YEAR}",
            errors=[{"field": "year", "message": f"{MIN_YEAR}–{MAX_YEAR}"}],
        )


async def list_days(session: AsyncSession, year: int) -> list[dict[str, Any]]:
    """The entries of ``year``, by day: ``{day, kind, name}``."""
    rows = await session.execute(
        text("SELECT day, kind, name FROM calendar_days WHERE day >= :a AND day < :b ORDER BY day"),
        {"a": date(year, 1, 1), "b": date(year + 1, 1, 1)},
    )
    return [{"day": r.day, "kind": r.kind, "name": r.name} for r in rows]


def _entries(year: int, holidays: Entries, workdays: Entries) -> list[dict[str, Any]]:
    """The rows to store, or ``InvalidInput`` listing every day outside ``year`` or entered twice."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    seen: dict[date, str] = {}
    for kind, field, entries in (("holiday", "holidays", holidays), ("workday", "workdays", workdays)):
        for i, raw in enumerate(entries):
            entry = Entry(*raw)
            where = f"{field}.{i}.day"
            if entry.day.year != year:
                errors.append({"field": where, "message": f"{entry.day} is not in {year}"})
            elif entry.day in seen:
                other = seen[entry.day]
                message = "entered twice" if other == field else f"also in {other}"
                errors.append({"field": where, "message": f"{entry.day}: {message}"})
            else:
                seen[entry.day] = field
                name = (entry.name or "").strip() or None
                rows.append({"day": entry.day, "kind": kind, "name": name})
    if errors:
        raise InvalidInput("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return rows


async def set_days(
    session: AsyncSession,
    year: int,
    holidays: Entries,
    workdays: Entries,
    user_id: int | None,
) -> None:
    """Replace the entries of ``year`` with ``holidays`` and ``workdays`` (days off and make-up
    working days, 调休), in the caller's transaction. The caller commits."""
    _check_year(year)
    rows = _entries(year, holidays, workdays)
    # Two administrators saving one year at once: the second waits, then deletes what the first
    # inserted (without the lock its DELETE would miss those rows and its INSERT would collide).
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('citygrid.calendar/' || :y, 0))"),
        {"y": str(year)},
    )
    await session.execute(
        text("DELETE FROM calendar_days WHERE day >= :a AND day < :b"),
        {"a": date(year, 1, 1), "b": date(year + 1, 1, 1)},
    )
    if rows:
        await session.execute(
            text("INSERT INTO calendar_days (day, kind, name, entered_by) VALUES (:day, :kind, :name, :by)"),
            [{**r, "by": user_id} for r in rows],
        )


async def year_view(session: AsyncSession, year: int) -> dict[str, Any]:
    """A year as the calendar has it: its weekday holidays and weekend working days (the
    package's, corrected by entries; only the entries for a year the package does not know),
    and what administrators entered."""
    _check_year(year)
    calendar = await load_calendar(session)
    entered = await list_days(session, year)
    names = {e["day"]: e["name"] for e in entered}
    known = calendar.knows(date(year, 1, 1))
    holidays, workdays = calendar.exceptions(year)

    def named(day: date) -> dict[str, Any]:
        return {"day": day, "name": names.get(day) or calendar.official_name(day)}

    return {
        "year": year,
        "known_to_package": known,
        "provisional": not known,
        "holidays": [named(d) for d in holidays],
        "workdays": [named(d) for d in workdays],
        "entered": entered,
    }


async def deadline_class(session: AsyncSession, code: str) -> tuple[Unit, float]:
    """The time unit and amount of a deadline class (``NotFound`` if there is none)."""
    row = (
        await session.execute(text("SELECT unit, amount FROM deadline_classes WHERE code = :c"), {"c": code})
    ).first()
    if row is None:
        raise NotFound(f"no deadline class {code!r}")
    return row.unit, float(row.amount)


async def unit_hours(session: AsyncSession, unit_id: int | None) -> WorkingHours:
    """A unit's working hours (the default when it has none, or for no unit)."""
    if unit_id is None:
        return DEFAULT_HOURS
    row = (
        await session.execute(text("SELECT working_hours FROM units WHERE id = :id"), {"id": unit_id})
    ).first()
    if row is None:
        raise NotFound(f"no unit {unit_id}")
    return WorkingHours.from_json(row.working_hours)


async def unit_id(session: AsyncSession, code: str) -> int:
    found = await session.scalar(text("SELECT id FROM units WHERE code = :c"), {"c": code})
    if found is None:
        raise NotFound(f"no unit {code!r}")
    return found


async def check_deadline(
    session: AsyncSession, start: datetime, class_code: str, unit_code: str | None = None
) -> Deadline:
    """The deadline of ``class_code`` from ``start`` on ``unit_code``'s working hours (the
    default hours without a unit). Unknown codes are ``InvalidInput`` (fields ``class``, ``unit``)."""
    try:
        unit, amount = await deadline_class(session, class_code)
    except NotFound as e:
        raise InvalidInput(
            e.detail, errors=[{"field": "class", "message": "unknown deadline class"}]
        ) from None
    hours = DEFAULT_HOURS
    if unit_code is not None:
        try:
            hours = await unit_hours(session, await unit_id(session, unit_code))
        except NotFound as e:
            raise InvalidInput(e.detail, errors=[{"field": "unit", "message": "unknown unit"}]) from None
    return add(start, amount, unit, hours, await load_calendar(session))
