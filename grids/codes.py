"""Unit-grid and region codes of GB/T 30428.1 (单元网格编码).

Layout: 6-digit county (GB/T 2260) + 3-digit street + 3-digit community + 3-digit grid
sequence = 15 digits. The older CJ/T 213-2005 code had a 2-digit sequence (14 digits); it is
read and widened to the current form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from geo.codes import (  # noqa: F401  (component codes are re-exported for callers here)
    InvalidCode,
    build_component,
    check_county,
    check_digits,
    validate_component,
    widen_legacy_component,
)

COUNTY_LEN = 6
STREET_LEN = 9
COMMUNITY_LEN = 12
GRID_LEN = 15
LEGACY_GRID_LEN = 14


class CodeLevel(StrEnum):
    county = "county"
    street = "street"
    community = "community"
    grid = "grid"


_LEVEL_BY_LEN = {
    COUNTY_LEN: CodeLevel.county,
    STREET_LEN: CodeLevel.street,
    COMMUNITY_LEN: CodeLevel.community,
    GRID_LEN: CodeLevel.grid,
}


@dataclass(frozen=True)
class GridCode:
    """A parsed 15-digit unit-grid code."""

    county: str
    street: str
    community: str
    sequence: int
    legacy: bool = False  # read from a 14-digit CJ/T 213-2005 code

    @property
    def code(self) -> str:
        return f"{self.community}{self.sequence:03d}"

    def __str__(self) -> str:
        return self.code


def level_of(code: str) -> CodeLevel:
    """The level (county, street, community, grid) of a well-formed code."""
    check_digits(code)
    level = _LEVEL_BY_LEN.get(len(code))
    if level is None:
        raise InvalidCode(code, f"{len(code)} digits is no region or grid code length")
    validate_region(code)
    return level


def validate_region(code: str) -> str:
    """Check a county, street, community or grid code; return it unchanged."""
    check_digits(code)
    if len(code) not in _LEVEL_BY_LEN:
        raise InvalidCode(code, f"{len(code)} digits is no region or grid code length")
    check_county(code)
    for start, end, what in ((6, 9, "street"), (9, 12, "community"), (12, 15, "grid sequence")):
        if len(code) >= end and code[start:end] == "000":
            raise InvalidCode(code, f"{what} part must be 001-999")
    return code


def parse_grid(code: str) -> GridCode:
    """Parse a 15-digit grid code, or a legacy 14-digit one (2-digit sequence)."""
    check_digits(code)
    if len(code) == LEGACY_GRID_LEN:
        community, seq = code[:12], int(code[12:])
        legacy = True
    elif len(code) == GRID_LEN:
        community, seq = code[:12], int(code[12:])
        legacy = False
    else:
        raise InvalidCode(code, f"a grid code has 15 digits (legacy 14), not {len(code)}")
    if seq == 0:
        raise InvalidCode(code, "grid sequence must be 001-999")
    validate_region(community)
    return GridCode(community[:6], community[:9], community, seq, legacy)


def build_grid(community: str, sequence: int) -> str:
    """The 15-digit code of grid number ``sequence`` inside ``community``."""
    if len(community) != COMMUNITY_LEN:
        raise InvalidCode(community, "a community code has 12 digits")
    validate_region(community)
    if not 1 <= sequence <= 999:
        raise InvalidCode(f"{community}{sequence}", "grid sequence must be 001-999")
    return f"{community}{sequence:03d}"


def parent(code: str) -> str | None:
    """The code one level up: grid → community → street → county → None."""
    level = level_of(code)
    return {
        CodeLevel.grid: code[:12],
        CodeLevel.community: code[:9],
        CodeLevel.street: code[:6],
        CodeLevel.county: None,
    }[level]


def ancestors(code: str) -> list[str]:
    """Every parent code, nearest first."""
    out: list[str] = []
    current: str | None = parent(code)
    while current is not None:
        out.append(current)
        current = parent(current)
    return out


def reading_order(points: Sequence[tuple[float, float]], row_height: float = 100.0) -> list[int]:
    """Indices of ``points`` in numbering order: north→south in rows, west→east inside a row.

    ``points`` are (x, y) in a projected metric CRS with y to the north (e.g. EPSG:4546
    easting/northing); ``row_height`` is the band, in metres, that counts as one row.
    """
    if not points:
        return []
    top = max(y for _, y in points)
    return sorted(
        range(len(points)),
        key=lambda i: (int((top - points[i][1]) // row_height), points[i][0], -points[i][1]),
    )
