"""Codes shared by the geography: GB/T 2260 county prefixes and 17-digit component codes.

A component instance (部件) is coded county (6) + class (5: 2-digit major, 3-digit minor) +
serial (6) = 17 digits; the GB/T 30428.2-2013 form had a 2+2-digit class (16 digits).
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"^[0-9]+$")

COMPONENT_LEN = 17
LEGACY_COMPONENT_LEN = 16


class InvalidCode(ValueError):
    """A code that does not follow GB/T 30428.1."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code!r}: {reason}")
        self.code = code
        self.reason = reason


def check_county(code: str) -> None:
    # GB/T 2260: 2-digit province (11..82), 2-digit prefecture, 2-digit county; none is 00
    # except the prefecture's own code, which has no grids.
    province, county = int(code[:2]), code[4:6]
    if not 11 <= province <= 82:
        raise InvalidCode(code, f"province part {code[:2]} is not a GB/T 2260 province")
    if county == "00":
        raise InvalidCode(code, "county part 00 names a prefecture, not a county")


def check_digits(code: str) -> None:
    if not isinstance(code, str) or not _DIGITS.match(code):
        raise InvalidCode(str(code), "must consist of digits only")


def validate_component(code: str) -> str:
    """Check a 17-digit component instance code: county + 5-digit class + 6-digit serial."""
    check_digits(code)
    if len(code) != COMPONENT_LEN:
        raise InvalidCode(code, f"a component code has 17 digits, not {len(code)}")
    check_county(code[:6])
    if code[6:8] == "00" or code[8:11] == "000":
        raise InvalidCode(code, "class part must be a 2-digit major and 3-digit minor class")
    if code[11:] == "000000":
        raise InvalidCode(code, "serial must be 000001-999999")
    return code


def build_component(county: str, class_code: str, serial: int) -> str:
    """The 17-digit code of a component instance."""
    code = f"{county}{class_code}{serial:06d}"
    return validate_component(code)


def widen_legacy_component(code: str) -> str:
    """A 16-digit GB/T 30428.2-2013 code (2+2-digit class) as the 17-digit form."""
    check_digits(code)
    if len(code) != LEGACY_COMPONENT_LEN:
        raise InvalidCode(code, "a legacy component code has 16 digits")
    return validate_component(f"{code[:6]}{code[6:8]}0{code[8:10]}{code[10:]}")
