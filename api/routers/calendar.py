"""The working-time calendar: holidays and make-up working days (调休) by year, and deadlines."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.auth import STAFF, AuthRoute, CurrentUser, DbSession, require
from cases import calendar_days
from cases.calendar_days import MAX_YEAR, MIN_YEAR
from cases.deadlines import TZ

router = APIRouter(prefix="/api/v1/calendar", tags=["calendar"], route_class=AuthRoute)

Year = Annotated[int, Path(ge=MIN_YEAR, le=MAX_YEAR, description="calendar year, e.g. 2027")]


class DayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] | None = Field(
        default=None, description="e.g. 元旦, 春节, 国庆节调休"
    )


class YearIn(BaseModel):
    """The administrator's entries of one year; they replace the year's previous entries."""

    model_config = ConfigDict(extra="forbid")

    holidays: Annotated[list[DayIn], Field(max_length=366, description="days off")] = []
    workdays: Annotated[list[DayIn], Field(max_length=366, description="make-up working days (调休)")] = []


# Before "/{year}", which would otherwise take "deadline" for a year.
@router.get(
    "/deadline", summary="The deadline of a deadline class from a start", dependencies=[require(*STAFF)]
)
async def deadline(
    session: DbSession,
    deadline_class: Annotated[
        str, Query(alias="class", max_length=64, description="deadline class, e.g. 1wd")
    ],
    start: Annotated[
        datetime | None, Query(description="ISO 8601; without an offset Asia/Shanghai; default now")
    ] = None,
    unit: Annotated[
        str | None, Query(max_length=64, description="unit code whose working hours apply; default hours")
    ] = None,
) -> dict[str, Any]:
    found = await calendar_days.check_deadline(session, start or datetime.now(TZ), deadline_class, unit)
    return {"deadline_at": found.at, "provisional": found.provisional}


@router.get("/{year}", summary="A year's holidays and make-up working days", dependencies=[require(*STAFF)])
async def get_year(year: Year, session: DbSession) -> dict[str, Any]:
    return await calendar_days.year_view(session, year)


@router.put(
    "/{year}", summary="Replace a year's entered holidays and working days", dependencies=[require("admin")]
)
async def put_year(year: Year, body: YearIn, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    await calendar_days.set_days(
        session,
        year,
        [(d.day, d.name) for d in body.holidays],
        [(d.day, d.name) for d in body.workdays],
        user.id,
    )
    await session.commit()
    return await calendar_days.year_view(session, year)
