"""Deadlines on the working-time calendar, against hand-computed dates of the official calendar.

2025: National Day and Mid-autumn Oct 1–8 (Wed–Wed) off, make-up working days Sunday Sept 28
and Saturday Oct 11. June 9–13, 2025 is an ordinary Monday–Friday week. Default hours
08:30–12:00 and 14:30–18:00 (7 working hours a day).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import chinese_calendar
import pytest

from cases import deadlines as dl
from cases.deadlines import DEFAULT_HOURS, Deadline, WorkCalendar, WorkingHours
from geo.errors import InvalidInput

CST = timezone(timedelta(hours=8))
OFFICIAL = WorkCalendar()


def t(text: str) -> datetime:
    """A Beijing-time instant from ``"2025-06-09 09:00"``."""
    return datetime.fromisoformat(text).replace(tzinfo=CST)


def add(start: str, amount: float, unit: dl.Unit, calendar: WorkCalendar = OFFICIAL, hours=DEFAULT_HOURS):
    return dl.add(t(start), amount, unit, hours, calendar)


def first_unknown_year() -> int:
    """The first year after 2020 the installed chinese-calendar has no data for."""
    year = 2020
    while True:
        try:
            chinese_calendar.is_workday(date(year, 1, 1))
        except NotImplementedError:
            return year
        year += 1


def first_weekday(year: int, month: int, weekday: int) -> date:
    day = date(year, month, 1)
    return day + timedelta(days=(weekday - day.weekday()) % 7)


# --- working hours -------------------------------------------------------------------------


def test_default_working_hours() -> None:
    assert WorkingHours.from_json(None) is DEFAULT_HOURS
    assert DEFAULT_HOURS.to_json() == {"periods": [["08:30", "12:00"], ["14:30", "18:00"]]}
    assert DEFAULT_HOURS.day_seconds == 7 * 3600


def test_working_hours_from_json() -> None:
    unit = WorkingHours.from_json({"periods": [["08:00", "17:00"]]})
    assert unit.day_seconds == 9 * 3600
    # asyncpg hands jsonb over as text
    assert WorkingHours.from_json('{"periods": [["8:00", "12:00"], ["13:00", "17:30"]]}').to_json() == {
        "periods": [["08:00", "12:00"], ["13:00", "17:30"]]
    }
    assert WorkingHours.from_json({"periods": [["00:00", "24:00"]]}).day_seconds == 86400


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        "not json",
        {"periods": []},
        {"periods": [["12:00", "08:30"]]},
        {"periods": [["08:00", "12:00"], ["11:00", "13:00"]]},
        {"periods": [["14:00", "18:00"], ["08:00", "12:00"]]},
        {"periods": [["8h", "12:00"]]},
        {"periods": [["08:00", "24:30"]]},
        {"periods": [["08:60", "12:00"]]},
        {"periods": [["08:00"]]},
        {"periods": [["08:00", "12:00"]], "timezone": "UTC"},
    ],
)
def test_invalid_working_hours(value) -> None:
    with pytest.raises(InvalidInput):
        WorkingHours.from_json(value)


# --- the calendar --------------------------------------------------------------------------


def test_official_calendar_2025_national_day() -> None:
    assert not OFFICIAL.is_workday(date(2025, 10, 1))
    assert not OFFICIAL.is_workday(date(2025, 10, 8))
    assert OFFICIAL.is_workday(date(2025, 9, 28))  # Sunday, 调休
    assert OFFICIAL.is_workday(date(2025, 10, 11))  # Saturday, 调休
    assert not OFFICIAL.is_workday(date(2025, 10, 12))
    assert OFFICIAL.status(date(2025, 10, 9)) == dl.DayStatus(workday=True, provisional=False)
    assert OFFICIAL.official_name(date(2025, 10, 1)) == "国庆节"
    holidays, workdays = OFFICIAL.exceptions(2025)
    assert [d for d in holidays if d.month == 10] == [date(2025, 10, d) for d in (1, 2, 3, 6, 7, 8)]
    assert [d for d in workdays if d.month in (9, 10)] == [date(2025, 9, 28), date(2025, 10, 11)]


def test_unknown_year_is_weekdays_plus_entries_and_provisional() -> None:
    year = first_unknown_year()
    monday = first_weekday(year, 3, 0)
    saturday, wednesday = monday + timedelta(days=5), monday + timedelta(days=2)
    calendar = WorkCalendar(holidays={wednesday}, workdays={saturday})
    assert not calendar.knows(monday)
    assert calendar.status(monday) == dl.DayStatus(workday=True, provisional=True)
    assert calendar.status(wednesday) == dl.DayStatus(workday=False, provisional=True)
    assert calendar.status(saturday) == dl.DayStatus(workday=True, provisional=True)
    assert not calendar.is_workday(saturday + timedelta(days=1))
    assert calendar.exceptions(year) == ([wednesday], [saturday])


def test_a_day_cannot_be_both() -> None:
    with pytest.raises(InvalidInput):
        WorkCalendar(holidays={date(2025, 5, 5)}, workdays={date(2025, 5, 5)})


# --- natural hours (自然时) -----------------------------------------------------------------


def test_natural_hours_across_midnight_and_holidays() -> None:
    assert add("2025-06-09 23:30", 2, "natural_hour") == Deadline(t("2025-06-10 01:30"), False)
    assert add("2025-09-30 23:00", 2, "natural_hour").at == t("2025-10-01 01:00")
    # no calendar day is relied on: never provisional, even in an unknown year
    unknown = first_unknown_year()
    assert not dl.add(
        datetime(unknown, 3, 1, 12, tzinfo=CST), 1, "natural_hour", DEFAULT_HOURS, OFFICIAL
    ).provisional


def test_naive_and_utc_starts_are_beijing_time() -> None:
    naive = dl.add(datetime(2025, 6, 9, 9), 2, "working_hour", DEFAULT_HOURS, OFFICIAL)
    utc = dl.add(datetime(2025, 6, 9, 1, tzinfo=UTC), 2, "working_hour", DEFAULT_HOURS, OFFICIAL)
    assert naive.at == utc.at == t("2025-06-09 11:00")
    assert naive.at.utcoffset() == timedelta(hours=8)


# --- working hours (工作时) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "amount", "expected"),
    [
        ("2025-06-09 09:00", 2, "2025-06-09 11:00"),  # inside the morning
        ("2025-06-09 09:00", 3, "2025-06-09 12:00"),  # uses the morning up: noon, not 14:30
        ("2025-06-09 11:00", 2, "2025-06-09 15:30"),  # across lunch
        ("2025-06-09 07:00", 1, "2025-06-09 09:30"),  # before opening: from 08:30
        ("2025-06-09 13:00", 1, "2025-06-09 15:30"),  # at lunch: from 14:30
        ("2025-06-09 11:45", 0.5, "2025-06-09 14:45"),  # 0.5 工作时 = 15 + 15 working minutes
        ("2025-06-09 17:50", 0.5, "2025-06-10 08:50"),  # 30 working minutes over night
        ("2025-06-13 17:00", 2, "2025-06-16 09:30"),  # Friday → Monday
        ("2025-06-14 10:00", 1, "2025-06-16 09:30"),  # Saturday: from Monday's opening
        ("2025-06-09 08:30", 7, "2025-06-09 18:00"),  # a whole working day
        ("2025-06-09 09:00", 7, "2025-06-10 09:00"),
    ],
)
def test_working_hours(start: str, amount: float, expected: str) -> None:
    assert add(start, amount, "working_hour") == Deadline(t(expected), False)


def test_working_hours_around_national_day_2025() -> None:
    # Friday 17:00: 1 h on Friday, then the make-up Sunday Sept 28 from 08:30
    assert add("2025-09-26 17:00", 4, "working_hour").at == t("2025-09-28 11:30")
    # the last working day before the holiday: 1 h, then Thursday Oct 9
    assert add("2025-09-30 17:00", 4, "working_hour").at == t("2025-10-09 11:30")
    # Friday Oct 10: the make-up Saturday Oct 11 counts
    assert add("2025-10-10 17:00", 4, "working_hour").at == t("2025-10-11 11:30")


def test_working_hours_around_national_day_2026() -> None:
    # 2026: Oct 1–7 off, Saturday Oct 10 a make-up working day
    assert add("2026-09-30 17:00", 4, "working_hour").at == t("2026-10-08 11:30")
    assert add("2026-10-09 17:00", 4, "working_hour").at == t("2026-10-10 11:30")


# --- working days (工作日) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "amount", "expected"),
    [
        # inside working hours: the same clock time on the Nth following working day
        ("2025-06-09 10:00", 1, "2025-06-10 10:00"),
        ("2025-06-09 10:00", 5, "2025-06-16 10:00"),
        ("2025-06-09 12:00", 1, "2025-06-10 12:00"),  # period ends belong to the period
        ("2025-06-13 17:59", 1, "2025-06-16 17:59"),
        # outside them: the close of the Nth following working day
        ("2025-06-09 20:00", 1, "2025-06-10 18:00"),
        ("2025-06-09 07:00", 1, "2025-06-10 18:00"),  # the start's own day never counts
        ("2025-06-09 13:00", 1, "2025-06-10 18:00"),  # lunch is outside working hours
        ("2025-06-14 10:00", 1, "2025-06-16 18:00"),  # Saturday
        ("2025-06-13 20:00", 2, "2025-06-17 18:00"),
        # fractions: a share of the day's 7 working hours
        ("2025-06-09 10:00", 0.5, "2025-06-09 16:00"),
        ("2025-06-09 10:00", 1.5, "2025-06-10 16:00"),
        ("2025-06-09 20:00", 0.5, "2025-06-10 12:00"),
    ],
)
def test_working_days(start: str, amount: float, expected: str) -> None:
    assert add(start, amount, "working_day") == Deadline(t(expected), False)


def test_working_days_around_national_day_2025() -> None:
    # the last working day before the holiday, inside and outside working hours
    assert add("2025-09-30 17:00", 1, "working_day").at == t("2025-10-09 17:00")
    assert add("2025-09-30 20:00", 1, "working_day").at == t("2025-10-09 18:00")
    # Friday before: the next working day is the make-up Sunday
    assert add("2025-09-26 17:00", 1, "working_day").at == t("2025-09-28 17:00")
    # on the holiday itself
    assert add("2025-10-03 10:00", 1, "working_day").at == t("2025-10-09 18:00")
    # Sept 30, Oct 9, 10, 11 (Saturday, 调休), 13
    assert add("2025-09-29 10:00", 5, "working_day").at == t("2025-10-13 10:00")


def test_working_days_around_holidays_2026() -> None:
    assert add("2026-09-30 17:00", 1, "working_day").at == t("2026-10-08 17:00")
    # Mid-autumn Friday Sept 25 off, then the weekend
    assert add("2026-09-24 17:00", 1, "working_day").at == t("2026-09-28 17:00")


# --- the year the package does not know -----------------------------------------------------


def test_deadline_running_into_the_unknown_year() -> None:
    year = first_unknown_year()
    last = date(year - 1, 12, 31)
    while not chinese_calendar.is_workday(last):
        last -= timedelta(days=1)
    start = datetime(last.year, last.month, last.day, 10, tzinfo=CST)
    new_year = date(year, 1, 1)
    january = [new_year + timedelta(days=k) for k in range(14)]

    # within the known year: not provisional
    assert add(start.strftime("%Y-%m-%d 10:00"), 2, "working_hour") == Deadline(
        start + timedelta(hours=2), False
    )
    # into the unknown one: weekdays only, provisional
    weekdays = [d for d in january if d.weekday() < 5]
    found = dl.add(start, 3, "working_day", DEFAULT_HOURS, OFFICIAL)
    assert found == Deadline(datetime.combine(weekdays[2], start.timetz()), True)
    # with New Year's Day (元旦) entered by an administrator
    calendar = WorkCalendar(holidays={new_year})
    weekdays = [d for d in january if d.weekday() < 5 and d != new_year]
    found = dl.add(start, 3, "working_day", DEFAULT_HOURS, calendar)
    assert found == Deadline(datetime.combine(weekdays[2], start.timetz()), True)


def test_unknown_year_uses_entered_holidays_and_make_up_days() -> None:
    year = first_unknown_year()
    monday = first_weekday(year, 3, 0)
    wednesday, friday, saturday = (monday + timedelta(days=k) for k in (2, 4, 5))
    start = datetime.combine(monday, datetime.min.time(), CST).replace(hour=10)

    def five_days(calendar: WorkCalendar) -> Deadline:
        return dl.add(start, 5, "working_day", DEFAULT_HOURS, calendar)

    next_monday = datetime.combine(monday + timedelta(days=7), start.timetz())
    assert five_days(WorkCalendar()) == Deadline(next_monday, True)  # plain weekdays
    holiday = WorkCalendar(holidays={wednesday})
    assert five_days(holiday) == Deadline(next_monday + timedelta(days=1), True)
    make_up = WorkCalendar(holidays={wednesday}, workdays={saturday})
    assert five_days(make_up) == Deadline(next_monday, True)  # Tue, Thu, Fri, Sat, Mon

    friday_17 = datetime.combine(friday, start.timetz()).replace(hour=17)
    assert dl.add(friday_17, 4, "working_hour", DEFAULT_HOURS, make_up) == Deadline(
        datetime.combine(saturday, start.timetz()).replace(hour=11, minute=30), True
    )
    assert dl.add(friday_17, 4, "working_hour", DEFAULT_HOURS, WorkCalendar()).at == (
        next_monday.replace(hour=11, minute=30)
    )


def test_injected_knowledge() -> None:
    # pretend 2025 is unpublished: National Day becomes an ordinary week, provisionally
    calendar = WorkCalendar(knows=lambda day: day.year < 2025)
    assert add("2025-09-30 17:00", 1, "working_day", calendar) == Deadline(t("2025-10-01 17:00"), True)
    assert add("2024-06-03 10:00", 1, "working_day", calendar) == Deadline(t("2024-06-04 10:00"), False)


def test_known_year_corrected_by_an_administrator() -> None:
    extra_holiday = WorkCalendar(holidays={date(2025, 10, 9)})
    assert add("2025-09-30 17:00", 1, "working_day", extra_holiday) == Deadline(t("2025-10-10 17:00"), False)
    extra_workday = WorkCalendar(workdays={date(2025, 10, 8)})
    assert add("2025-09-30 17:00", 1, "working_day", extra_workday) == Deadline(t("2025-10-08 17:00"), False)


def test_a_calendar_without_working_days_fails_instead_of_looping() -> None:
    days = [date(2030, 1, 1) + timedelta(days=k) for k in range(800)]
    closed = WorkCalendar(holidays=days, knows=lambda day: False)
    with pytest.raises(InvalidInput):
        dl.add(datetime(2030, 1, 2, 10, tzinfo=CST), 1, "working_hour", DEFAULT_HOURS, closed)


def test_invalid_amounts_and_units() -> None:
    with pytest.raises(InvalidInput):
        add("2025-06-09 10:00", -1, "working_hour")
    with pytest.raises(InvalidInput):
        add("2025-06-09 10:00", float("nan"), "working_day")
    with pytest.raises(InvalidInput):
        add("2025-06-09 10:00", 1, "fortnight")  # type: ignore[arg-type]
    assert add("2025-06-09 20:00", 0, "working_hour").at == t("2025-06-09 20:00")


# --- a unit's own working hours ------------------------------------------------------------


def test_unit_working_eight_to_five_without_lunch() -> None:
    hours = WorkingHours.from_json({"periods": [["08:00", "17:00"]]})
    assert add("2025-06-09 16:00", 4, "working_hour", hours=hours).at == t("2025-06-10 11:00")
    assert add("2025-06-09 12:30", 1, "working_hour", hours=hours).at == t("2025-06-09 13:30")
    assert add("2025-06-09 17:30", 1, "working_day", hours=hours).at == t("2025-06-10 17:00")
    assert add("2025-06-09 16:30", 1, "working_day", hours=hours).at == t("2025-06-10 16:30")
    assert dl.counted_seconds(
        t("2025-06-09 07:00"), t("2025-06-09 20:00"), "working_hour", hours, OFFICIAL
    ) == (9 * 3600)


# --- counting time and the traffic light ---------------------------------------------------


def counted(start: str, end: str, unit: dl.Unit) -> float:
    return dl.counted_seconds(t(start), t(end), unit, DEFAULT_HOURS, OFFICIAL)


def test_counted_seconds() -> None:
    assert counted("2025-06-09 09:00", "2025-06-09 15:00", "working_hour") == 3.5 * 3600
    assert counted("2025-06-09 09:00", "2025-06-09 15:00", "working_day") == 3.5 * 3600
    assert counted("2025-06-09 09:00", "2025-06-09 15:00", "natural_hour") == 6 * 3600
    assert counted("2025-06-13 17:00", "2025-06-16 09:30", "working_hour") == 2 * 3600
    assert counted("2025-09-30 17:00", "2025-10-09 11:30", "working_hour") == 4 * 3600
    assert counted("2025-06-09 15:00", "2025-06-09 09:00", "working_hour") == -3.5 * 3600


@pytest.mark.parametrize(
    "start",
    ["2025-06-09 07:00", "2025-06-09 11:45", "2025-09-26 17:00", "2025-09-30 17:59", "2025-10-04 09:00"],
)
@pytest.mark.parametrize("amount", [0.5, 1, 4, 30])
def test_working_hours_count_back_to_their_amount(start: str, amount: float) -> None:
    found = add(start, amount, "working_hour")
    assert dl.counted_seconds(t(start), found.at, "working_hour", DEFAULT_HOURS, OFFICIAL) == amount * 3600


def light(start: str, deadline: str, now: str, unit: dl.Unit) -> str:
    return dl.light(t(start), t(deadline), t(now), unit, DEFAULT_HOURS, OFFICIAL)


def test_light_thresholds_in_working_hours() -> None:
    start, deadline = "2025-06-09 09:00", "2025-06-09 15:30"  # 4 工作时
    assert add(start, 4, "working_hour").at == t(deadline)
    assert light(start, deadline, "2025-06-09 13:00", "working_hour") == "green"  # 75 %, lunch
    assert light(start, deadline, "2025-06-09 14:39:36", "working_hour") == "green"  # 79 %
    assert light(start, deadline, "2025-06-09 14:42", "working_hour") == "yellow"  # 80 %
    assert light(start, deadline, "2025-06-09 15:30", "working_hour") == "yellow"  # 100 %
    assert light(start, deadline, "2025-06-09 15:30:01", "working_hour") == "red"


def test_light_in_natural_hours_and_working_days() -> None:
    assert light("2025-06-09 10:00", "2025-06-09 11:00", "2025-06-09 10:47", "natural_hour") == "green"
    assert light("2025-06-09 10:00", "2025-06-09 11:00", "2025-06-09 10:48", "natural_hour") == "yellow"
    assert light("2025-06-09 10:00", "2025-06-09 11:00", "2025-06-09 11:00:01", "natural_hour") == "red"
    # 1 工作日 = 7 working hours; 80 % = 5 h 36 min: Monday's 5.5 h, then 6 minutes on Tuesday
    start, deadline = "2025-06-09 10:00", "2025-06-10 10:00"
    assert light(start, deadline, "2025-06-09 23:00", "working_day") == "green"
    assert light(start, deadline, "2025-06-10 08:35", "working_day") == "green"
    assert light(start, deadline, "2025-06-10 08:36", "working_day") == "yellow"


def test_time_left() -> None:
    assert dl.time_left_s(t("2025-06-09 15:00"), t("2025-06-09 15:30")) == 1800
    assert dl.time_left_s(t("2025-06-09 16:00"), t("2025-06-09 15:30")) == -1800


# --- suspension (挂账) and extension (延期) --------------------------------------------------


def test_suspend_and_resume_keep_the_working_time_left() -> None:
    deadline = add("2025-06-09 09:00", 4, "working_hour").at  # Monday 15:30
    left = dl.remaining(t("2025-06-09 10:00"), deadline, "working_hour", DEFAULT_HOURS, OFFICIAL)
    assert left == 3 * 3600
    resumed = dl.resume(t("2025-06-11 16:00"), left, "working_hour", DEFAULT_HOURS, OFFICIAL)
    assert resumed == Deadline(t("2025-06-12 09:30"), False)  # 2 h on Wednesday, 1 h on Thursday
    assert dl.remaining(t("2025-06-11 16:00"), resumed.at, "working_hour", DEFAULT_HOURS, OFFICIAL) == left


def test_suspended_working_day_stage_across_the_holiday() -> None:
    deadline = add("2025-09-30 10:00", 1, "working_day").at
    assert deadline == t("2025-10-09 10:00")
    # 11:00–12:00, 14:30–18:00 on Sept 30 and 08:30–10:00 on Oct 9
    left = dl.remaining(t("2025-09-30 11:00"), deadline, "working_day", DEFAULT_HOURS, OFFICIAL)
    assert left == 6 * 3600
    resumed = dl.resume(t("2025-10-13 09:00"), left, "working_day", DEFAULT_HOURS, OFFICIAL)
    assert resumed.at == t("2025-10-13 17:30")


def test_suspend_and_resume_natural_hours() -> None:
    deadline = add("2025-06-09 10:00", 2, "natural_hour").at
    left = dl.remaining(t("2025-06-09 11:00"), deadline, "natural_hour", DEFAULT_HOURS, OFFICIAL)
    assert left == 3600
    assert dl.resume(t("2025-06-10 20:00"), left, "natural_hour", DEFAULT_HOURS, OFFICIAL).at == t(
        "2025-06-10 21:00"
    )


def test_suspended_while_overdue_stays_overdue() -> None:
    deadline = t("2025-06-09 15:30")
    left = dl.remaining(t("2025-06-09 16:00"), deadline, "working_hour", DEFAULT_HOURS, OFFICIAL)
    assert left == -1800
    resumed = dl.resume(t("2025-06-11 09:00"), left, "working_hour", DEFAULT_HOURS, OFFICIAL)
    assert resumed.at == t("2025-06-11 08:30")
    assert dl.time_left_s(t("2025-06-11 09:00"), resumed.at) == -1800
    # counted back from an opening: into the previous working day's afternoon
    assert dl.resume(t("2025-06-11 08:30"), -1800, "working_hour", DEFAULT_HOURS, OFFICIAL).at == t(
        "2025-06-10 17:30"
    )


def test_extension_adds_its_time_from_the_current_deadline() -> None:
    def extend(deadline: str, amount: float, unit: dl.Unit) -> datetime:
        return dl.extend(t(deadline), amount, unit, DEFAULT_HOURS, OFFICIAL).at

    assert extend("2025-06-09 15:30", 2, "working_hour") == t("2025-06-09 17:30")
    assert extend("2025-06-09 17:30", 2, "working_hour") == t("2025-06-10 10:00")
    assert extend("2025-09-30 17:00", 1, "working_day") == t("2025-10-09 17:00")
    assert extend("2025-06-13 18:00", 1, "working_day") == t("2025-06-16 18:00")  # at the close
    assert extend("2025-06-09 15:30", 2, "natural_hour") == t("2025-06-09 17:30")


# --- stages --------------------------------------------------------------------------------


def test_stage_classes_follow_the_lifecycle() -> None:
    assert dict(dl.STAGES) == {
        "received": "stage_file",
        "verifying": "stage_verify",
        "filed": "stage_dispatch",
        "returned": "stage_dispatch",
        "dispatched": dl.HANDLING,
        "handled": "stage_check",
        "checked": "stage_close",
        "suspended": None,
    }
    assert dl.stage_class("dispatched", "4wh") == "4wh"
    assert dl.stage_class("returned", "4wh") == "stage_dispatch"
    assert dl.stage_class("suspended", "4wh") is None
    assert dl.stage_class("closed", "4wh") is None
    migration = (Path(__file__).parents[1] / "migrations" / "versions" / "0004_workflow.py").read_text()
    defined = set(re.findall(r"\('(stage_\w+)'", migration))
    assert {c for c in dl.STAGES.values() if c and c != dl.HANDLING} <= defined
