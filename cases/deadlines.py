"""Deadlines on a working-time calendar: pure time arithmetic, Asia/Shanghai (deadlines.md).

Three units of time:

- 自然时 ``natural_hour``: wall-clock hours.
- 工作时 ``working_hour``: only the time inside a unit's working periods (``WorkingHours``) on
  working days counts; a start outside them begins counting at the next period start.
- 工作日 ``working_day``: the deadline falls at the same clock time on the Nth following working
  day, or at the close of that day's working hours when the start was outside them (see
  ``add``). For the traffic light and for suspension, working days are measured in working
  time like working hours.

Working days are China's official calendar, holidays and make-up working days (调休)
included, from the ``chinese-calendar`` package, corrected by the days an administrator
entered (``WorkCalendar``). For a year the package does not know yet, weekdays are working
days except the administrator's holidays, plus the administrator's make-up working days; any
result that relied on such a day is *provisional*.

Naive datetimes are read as Asia/Shanghai wall time; results are aware, in Asia/Shanghai.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar.constants import Holiday

from geo.errors import InvalidInput

TZ: Final = ZoneInfo("Asia/Shanghai")

Unit = Literal["natural_hour", "working_hour", "working_day"]
UNITS: Final = get_args(Unit)
Light = Literal["green", "yellow", "red"]

# A run of non-working days this long means a broken calendar (every day entered as a
# holiday, say): fail instead of searching for a working day for ever.
MAX_IDLE_DAYS: Final = 366

_DAY_S: Final = 86400
_ONE_DAY: Final = timedelta(days=1)


# --- working hours -------------------------------------------------------------------------


_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def _clock_s(value: Any) -> int | None:
    """Seconds since midnight of ``"HH:MM"`` (``"24:00"`` allowed, as an end), or None."""
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    h, m = int(match[1]), int(match[2])
    if m >= 60 or h > 24 or (h == 24 and m):
        return None
    return h * 3600 + m * 60


def _clock_text(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


@dataclass(frozen=True)
class WorkingHours:
    """The working periods of a working day, as seconds since local midnight, in order.

    Default 08:30–12:00 and 14:30–18:00; a unit may have its own (``units.working_hours``)."""

    periods: tuple[tuple[int, int], ...] = ((8 * 3600 + 1800, 12 * 3600), (14 * 3600 + 1800, 18 * 3600))

    def __post_init__(self) -> None:
        problem = _periods_problem(self.periods)
        if problem:
            raise InvalidInput(f"working hours: {problem}", errors=[{"field": "periods", "message": problem}])

    @classmethod
    def from_json(cls, value: Any) -> WorkingHours:
        """A unit's ``working_hours`` jsonb, ``{"periods": [["08:30", "12:00"], ["14:30", "18:00"]]}``
        (or its JSON text); None → the default. Anything else → ``InvalidInput``."""
        if value is None:
            return DEFAULT_HOURS
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError:
                raise _hours_error("working_hours", "not JSON") from None
        if not isinstance(value, dict) or set(value) != {"periods"}:
            raise _hours_error("working_hours", 'expected {"periods": [["HH:MM", "HH:MM"], …]}')
        raw = value["periods"]
        if not isinstance(raw, list) or not raw:
            raise _hours_error("working_hours.periods", "a non-empty list of [start, end]")
        periods = []
        for i, period in enumerate(raw):
            bounds = [_clock_s(p) for p in period] if isinstance(period, list) and len(period) == 2 else []
            if len(bounds) != 2 or None in bounds:
                raise _hours_error(f"working_hours.periods.{i}", 'expected ["HH:MM", "HH:MM"]')
            periods.append((bounds[0], bounds[1]))
        problem = _periods_problem(tuple(periods))
        if problem:
            raise _hours_error("working_hours.periods", problem)
        return cls(tuple(periods))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, list[list[str]]]:
        return {"periods": [[_clock_text(s), _clock_text(e)] for s, e in self.periods]}

    @property
    def day_seconds(self) -> int:
        """Working seconds in one working day."""
        return sum(e - s for s, e in self.periods)

    def spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The working periods of ``day`` as aware instants (whether ``day`` is a working day
        is the calendar's business)."""
        midnight = datetime.combine(day, time(), TZ)
        return [(midnight + timedelta(seconds=s), midnight + timedelta(seconds=e)) for s, e in self.periods]


def _periods_problem(periods: tuple[tuple[int, int], ...]) -> str | None:
    if not periods:
        return "at least one period"
    previous_end = 0
    for start, end in periods:
        if not 0 <= start < end <= _DAY_S:
            return f"{_clock_text(start)}–{_clock_text(end)} is not a period within a day"
        if start < previous_end:
            return "periods must be in order and must not overlap"
        previous_end = end
    return None


def _hours_error(where: str, message: str) -> InvalidInput:
    return InvalidInput(f"invalid working hours: {message}", errors=[{"field": where, "message": message}])


DEFAULT_HOURS: Final = WorkingHours()


# --- working days --------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _package_knows_year(year: int) -> bool:
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


def package_knows(day: date) -> bool:
    """Whether the installed ``chinese-calendar`` has published data for ``day``'s year."""
    return _package_knows_year(day.year)


@dataclass(frozen=True)
class DayStatus:
    workday: bool
    provisional: bool  # the package does not know the year: weekdays and entered days only


class WorkCalendar:
    """Which dates are working days (工作日): the official calendar with make-up working days
    (调休) from ``chinese-calendar``, overridden by administrator entries.

    ``holidays``/``workdays``: the days an administrator entered as holidays and as working
    days. For a known year they are corrections of the package; for a year the package does
    not know they are the whole calendar beyond "Monday to Friday", and every answer about such
    a year is provisional. ``knows`` tells whether the package knows a date's year (injectable
    for tests; by default the package is asked).
    """

    def __init__(
        self,
        holidays: Iterable[date] = (),
        workdays: Iterable[date] = (),
        knows: Callable[[date], bool] = package_knows,
    ) -> None:
        self.holidays = frozenset(holidays)
        self.workdays = frozenset(workdays)
        both = self.holidays & self.workdays
        if both:
            raise InvalidInput(
                "a day cannot be both a holiday and a working day: "
                + ", ".join(d.isoformat() for d in sorted(both))
            )
        self._knows = knows
        self._cache: dict[date, DayStatus] = {}

    def knows(self, day: date) -> bool:
        return self._official(day) is not None

    def _official(self, day: date) -> bool | None:
        """The package's answer, None when it does not know the year."""
        if not self._knows(day):
            return None
        try:
            return chinese_calendar.is_workday(day)
        except NotImplementedError:  # an injected ``knows`` claimed more than the package has
            return None

    def status(self, day: date) -> DayStatus:
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        official = self._official(day)
        if day in self.holidays:
            workday = False
        elif day in self.workdays:
            workday = True
        elif official is None:
            workday = day.weekday() < 5
        else:
            workday = official
        status = self._cache[day] = DayStatus(workday, official is None)
        return status

    def is_workday(self, day: date) -> bool:
        return self.status(day).workday

    def official_name(self, day: date) -> str | None:
        """The Chinese name of the holiday ``day`` belongs to (or makes up for), per the package."""
        if self._official(day) is None:
            return None
        _, name = chinese_calendar.get_holiday_detail(day)
        if name is None:
            return None
        try:
            return Holiday(name).chinese
        except ValueError:
            return name

    def exceptions(self, year: int) -> tuple[list[date], list[date]]:
        """The year's days off on weekdays and its working weekend days, as this calendar has them."""
        holidays, workdays = [], []
        day = date(year, 1, 1)
        while day.year == year:
            weekday, working = day.weekday() < 5, self.is_workday(day)
            if weekday and not working:
                holidays.append(day)
            elif working and not weekday:
                workdays.append(day)
            day += _ONE_DAY
        return holidays, workdays


class _Days:
    """The days one computation consults; remembers whether it relied on a provisional one."""

    def __init__(self, calendar: WorkCalendar) -> None:
        self.calendar = calendar
        self.provisional = False

    def workday(self, day: date) -> bool:
        status = self.calendar.status(day)
        self.provisional |= status.provisional
        return status.workday

    def step(self, day: date, direction: int) -> date:
        """The next (previous, for -1) working day after ``day``."""
        for _ in range(MAX_IDLE_DAYS):
            day += direction * _ONE_DAY
            if self.workday(day):
                return day
        raise _no_working_day(day)


def _no_working_day(day: date) -> InvalidInput:
    return InvalidInput(f"the calendar has no working day within {MAX_IDLE_DAYS} days of {day}")


# --- arithmetic ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    at: datetime
    provisional: bool = False


def _local(at: datetime) -> datetime:
    return at.replace(tzinfo=TZ) if at.tzinfo is None else at.astimezone(TZ)


def _elapsed(at: datetime, seconds: float) -> datetime:
    # Through UTC: wall-clock arithmetic on an aware datetime would ignore an offset change.
    return (at.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(TZ)


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise InvalidInput(f"unknown time unit {unit!r}; one of {', '.join(UNITS)}")


def _check_amount(amount: float) -> float:
    value = float(amount)
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"a time amount must be a finite number ≥ 0, not {amount}")
    return value


def _shift(at: datetime, seconds: float, hours: WorkingHours, days: _Days) -> datetime:
    """The instant ``seconds`` working seconds (工作时) after ``at``, or before it when negative.

    Forward, a deadline that uses up a period exactly falls at the period's end, not at the
    start of the next one."""
    if seconds == 0:
        return at
    direction = 1 if seconds > 0 else -1
    left = abs(seconds)
    day = at.date()
    if not days.workday(day):
        day = days.step(day, direction)
    while True:
        spans = hours.spans(day)
        for start, end in spans if direction > 0 else reversed(spans):
            start, end = (max(start, at), end) if direction > 0 else (start, min(end, at))
            if start >= end:
                continue
            available = (end - start).total_seconds()
            if left <= available:
                return start + timedelta(seconds=left) if direction > 0 else end - timedelta(seconds=left)
            left -= available
        day = days.step(day, direction)


def _working_seconds(start: datetime, end: datetime, hours: WorkingHours, days: _Days) -> float:
    """Working seconds inside [start, end] (start ≤ end)."""
    total = 0.0
    day = start.date()
    while day <= end.date():
        if days.workday(day):
            for s, e in hours.spans(day):
                lo, hi = max(s, start), min(e, end)
                if lo < hi:
                    total += (hi - lo).total_seconds()
        day += _ONE_DAY
    return total


def _inside(at: datetime, hours: WorkingHours, days: _Days) -> bool:
    """Whether ``at`` lies within a working period of a working day (both ends included: 12:00
    and 18:00 still are the morning's and the day's working time)."""
    return days.workday(at.date()) and any(s <= at <= e for s, e in hours.spans(at.date()))


def _add_working_days(start: datetime, amount: float, hours: WorkingHours, days: _Days) -> datetime:
    whole = math.floor(amount)
    at = start
    if whole:
        inside = _inside(start, hours, days)
        day = start.date()
        for _ in range(whole):
            day = days.step(day, 1)
        # Same clock time when inside working hours, else the close of that day's hours.
        at = datetime.combine(day, start.time(), TZ) if inside else hours.spans(day)[-1][1]
    # A fraction of a working day is that fraction of the day's working time (0.5 工作日 with
    # the default hours = 3.5 工作时), counted on from there.
    return _shift(at, (amount - whole) * hours.day_seconds, hours, days)


def add(start: datetime, amount: float, unit: Unit, hours: WorkingHours, calendar: WorkCalendar) -> Deadline:
    """The deadline ``amount`` ``unit``s after ``start``.

    - ``natural_hour``: ``amount`` wall-clock hours later.
    - ``working_hour``: ``amount`` hours of working time later; counting starts at ``start``
      when it is inside a working period, otherwise at the next period start (Friday 17:00 +
      4 工作时 → Friday 18:00 + 3 h on the next working day → 11:30 there).
    - ``working_day`` (deadlines.md, read literally): "the Nth following working day" is the
      Nth working day after the calendar date of ``start`` — the start's own day never counts.
      When ``start`` is inside working hours on a working day (both ends of a period
      included), the deadline is the same clock time on that day (Tuesday 17:00 before the
      National Day holiday + 1 工作日 → 17:00 on the first working day after it). Otherwise —
      before opening, at lunch, after closing, or on a day off — it is the close of that day's
      working hours (20:00 + 1 工作日 → 18:00 of the next working day; Saturday + 1 工作日 →
      18:00 Monday; 07:00 Monday + 1 工作日 → 18:00 Tuesday). A fractional rest is that share
      of a day's working time, added in working time (1.5 工作日 = 1 工作日, then 3.5 工作时).

    ``provisional`` is True when any day consulted lies in a year the package does not know.
    """
    _check_unit(unit)
    amount = _check_amount(amount)
    start = _local(start)
    if unit == "natural_hour":
        return Deadline(_elapsed(start, amount * 3600), False)
    days = _Days(calendar)
    if unit == "working_hour":
        at = _shift(start, amount * 3600, hours, days)
    else:
        at = _add_working_days(start, amount, hours, days)
    return Deadline(at, days.provisional)


def counted_seconds(
    start: datetime, end: datetime, unit: Unit, hours: WorkingHours, calendar: WorkCalendar
) -> float:
    """The counting time from ``start`` to ``end`` (negative when ``end`` is earlier): wall
    seconds for natural hours, working seconds (inside working periods on working days) for
    working hours and working days alike."""
    _check_unit(unit)
    start, end = _local(start), _local(end)
    if unit == "natural_hour":
        return (end - start).total_seconds()
    if end < start:
        return -_working_seconds(end, start, hours, _Days(calendar))
    return _working_seconds(start, end, hours, _Days(calendar))


def light(
    stage_started_at: datetime,
    deadline_at: datetime,
    now: datetime,
    unit: Unit,
    hours: WorkingHours,
    calendar: WorkCalendar,
) -> Light:
    """The traffic light of a stage: ``green`` while under 80 % of its counting time
    (``stage_started_at`` → ``deadline_at``) is used, ``yellow`` from 80 % up to the deadline,
    ``red`` once ``now`` is past it."""
    if _local(now) > _local(deadline_at):
        return "red"
    total = counted_seconds(stage_started_at, deadline_at, unit, hours, calendar)
    used = counted_seconds(stage_started_at, now, unit, hours, calendar)
    # used/total < 0.8 without the float division: exactly 80 % must be yellow.
    return "green" if total > 0 and used * 5 < total * 4 else "yellow"


def time_left_s(now: datetime, deadline_at: datetime) -> float:
    """Wall seconds until the deadline, negative when overdue."""
    return (_local(deadline_at) - _local(now)).total_seconds()


# --- suspension and extension --------------------------------------------------------------


def remaining(
    now: datetime, deadline_at: datetime, unit: Unit, hours: WorkingHours, calendar: WorkCalendar
) -> float:
    """The counting time left at ``now`` (negative when overdue): what a suspension (挂账)
    freezes, to be handed to ``resume``."""
    return counted_seconds(now, deadline_at, unit, hours, calendar)


def resume(
    now: datetime, remaining_counted_s: float, unit: Unit, hours: WorkingHours, calendar: WorkCalendar
) -> Deadline:
    """The deadline of a resumed stage: the clock goes on at ``now`` with the time that was
    left — wall seconds for natural hours, working seconds for working hours and days. A
    negative rest (suspended while overdue) stays overdue by as much."""
    _check_unit(unit)
    now = _local(now)
    if not math.isfinite(remaining_counted_s):
        raise InvalidInput("the remaining time must be a finite number")
    if unit == "natural_hour":
        return Deadline(_elapsed(now, remaining_counted_s), False)
    days = _Days(calendar)
    return Deadline(_shift(now, remaining_counted_s, hours, days), days.provisional)


def extend(
    deadline_at: datetime, amount: float, unit: Unit, hours: WorkingHours, calendar: WorkCalendar
) -> Deadline:
    """The deadline after an approved extension (延期) of ``amount`` ``unit``s: its time is
    added from the current deadline, by the rules of ``add``."""
    return add(deadline_at, amount, unit, hours, calendar)


# --- stages --------------------------------------------------------------------------------

HANDLING: Final = "handling"
"""Stands in ``STAGES`` for the handling limit (处置时限): the case's own deadline class."""

STAGES: Final[Mapping[str, str | None]] = MappingProxyType(
    {
        # reports
        "received": "stage_file",
        "verifying": "stage_verify",
        # cases (lifecycle.md, Stage deadlines)
        "filed": "stage_dispatch",
        "returned": "stage_dispatch",
        "dispatched": HANDLING,
        "handled": "stage_check",
        "checked": "stage_close",
        "suspended": None,  # the clock stops; the time left is frozen
    }
)
"""The deadline class of the stage a report or case in each status is in."""


def stage_class(status: str, handling_class: str | None) -> str | None:
    """The deadline class code of ``status``'s stage: ``handling_class`` while dispatched,
    None for statuses without a deadline (suspended, closed, cancelled, rejected, …)."""
    code = STAGES.get(status)
    return handling_class if code == HANDLING else code
