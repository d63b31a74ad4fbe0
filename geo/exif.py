"""Geotags of field photos: position, altitude, direction and capture time from EXIF.

Photos come from phones and cameras we do not control, and sometimes from people who want to
break the upload path, so every value is validated and anything unusable is reported in
``Geotag.problems`` instead of raised. Reading uses Pillow only (piexif is a test dependency).
"""

from __future__ import annotations

import io
import math
import numbers
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, Any

from PIL import ExifTags, Image, UnidentifiedImageError

__all__ = ["EXIF_ERRORS", "Geotag", "read_geotag", "read_geotag_file", "read_orientation"]

# What a geotag can contain, in the order reported by ``found`` / ``missing``.
PARTS = ("position", "altitude", "direction", "taken_at", "offset")

# Outside these bounds an altitude is a garbled value, not a place: below the deepest ocean
# trench, or above anything a camera rides in the atmosphere (weather balloons ~40 km).
MIN_ALTITUDE_M = -12_000.0
MAX_ALTITUDE_M = 50_000.0

# Aware datetimes near year 1 or 9999 overflow as soon as a caller converts them to UTC, and no
# photo is that old or that far in the future, so dates outside this window are rejected.
MIN_YEAR, MAX_YEAR = 1900, 2200

# No real-world UTC offset lies beyond ±14:00 (Kiribati); anything larger is garbage.
MAX_OFFSET = timedelta(hours=14)

# An eXIf chunk larger than this is not camera metadata; don't read it into memory.
MAX_PNG_EXIF_BYTES = 4 * 1024 * 1024

# What Pillow's EXIF code is known to raise on corrupt input (bad TIFF header, offsets outside
# the block, short reads, odd types, undecodable text); also what re-serialising it raises.
EXIF_ERRORS: tuple[type[BaseException], ...] = (
    SyntaxError,
    struct.error,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OSError,
)

# Image.open on a file we only read metadata from: these mean "cannot be opened as an image".
_OPEN_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    # Pillow parses JPEG EXIF while opening (for the resolution) and warns about corrupt tags;
    # under strict warning filters those warnings arrive here as exceptions.
    Warning,
    SyntaxError,
    struct.error,
    ValueError,
    EOFError,
    OSError,
)

# Only parse formats that field photos come in: no other Pillow plugin ever sees the bytes.
_GEOTAG_FORMATS = ("JPEG", "PNG", "WEBP")

_GPS = ExifTags.GPS
_DATETIME_RE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})", re.ASCII)
_OFFSET_RE = re.compile(r"([+-])(\d{2}):(\d{2})", re.ASCII)
# EXIF writes unknown dates/offsets as blanks with the separators kept ("    :  :     :  :  ").
_BLANK_RE = re.compile(r"[ :]*")


@dataclass(frozen=True)
class Geotag:
    """Geotag of one photo. ``None`` means not found or not usable (see ``problems``).

    ``found`` and ``missing`` partition :data:`PARTS`; ``problems`` explains values that were
    present but unusable as ``"<field>: <reason>"`` (a present but broken value is also missing).
    """

    lon: float | None
    lat: float | None
    altitude_m: float | None
    direction_deg: float | None
    taken_at: datetime | None  # aware when OffsetTimeOriginal is usable, else naive
    found: tuple[str, ...]
    missing: tuple[str, ...]
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``taken_at`` as ISO 8601 (with offset when known)."""
        return {
            "lon": self.lon,
            "lat": self.lat,
            "altitude_m": self.altitude_m,
            "direction_deg": self.direction_deg,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "found": list(self.found),
            "missing": list(self.missing),
            "problems": list(self.problems),
        }


class _Unusable(Exception):
    """A value is present but cannot be used; the message becomes a problem entry."""


def read_geotag(image: Image.Image) -> Geotag:
    """Read the geotag of an opened image. Never raises: broken EXIF yields ``problems``.

    For a PNG whose EXIF is stored after the pixel data Pillow decodes the image to reach it;
    use :func:`read_geotag_file` to avoid that.
    """
    return _geotag(lambda: _exif_of(image))


def read_geotag_file(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes],
) -> Geotag:
    """Read the geotag of a JPEG/PNG/WebP file (path, bytes or binary file) without decoding pixels.

    Content that is not such an image gives an empty geotag with a problem; a path that cannot
    be opened (missing file, permissions) raises ``OSError`` because that is the caller's error.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _geotag_from_stream(io.BytesIO(source))
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fp:
            return _geotag_from_stream(fp)
    return _geotag_from_stream(source)


def read_orientation(image: Image.Image) -> int:
    """EXIF Orientation (1-8) of an opened image; 1 when absent, invalid or unreadable."""
    try:
        value = _single(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (*EXIF_ERRORS, Warning):  # Warning: EXIF warnings escalated by strict filters
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1


def _geotag_from_stream(fp: IO[bytes]) -> Geotag:
    try:
        image = Image.open(fp, formats=_GEOTAG_FORMATS)
    except _OPEN_ERRORS as exc:
        return _result({}, [f"image: cannot be opened as JPEG, PNG or WebP ({_name(exc)})"])
    with image:
        if image.format == "PNG" and "exif" not in image.info and image.fp is not None:
            # Pillow would decode every pixel to look for an eXIf chunk after IDAT;
            # walking the chunk headers finds it without inflating anything.
            stream = image.fp
            return _geotag(lambda: _exif_from_bytes(_png_exif_chunk(stream)))
        return read_geotag(image)


def _exif_of(image: Image.Image) -> Image.Exif:
    exif = image.getexif()
    raw = image.info.get("exif")
    if not len(exif) and isinstance(raw, bytes) and raw:
        # Pillow's JPEG plugin reads EXIF while opening and swallows parse errors, leaving an
        # empty cached Exif behind; parse the block again so the reason becomes a problem.
        return _exif_from_bytes(raw)
    return exif


def _geotag(load_exif: Callable[[], Image.Exif]) -> Geotag:
    problems: list[str] = []
    try:
        return _parse(load_exif, problems)
    except Exception as exc:
        # Last resort, deliberately broad: Pillow's EXIF parser does not document what it raises
        # on hostile input (and its warnings become exceptions under strict warning filters).
        # A broken geotag must never fail the upload, so report it and return an empty tag.
        problems.append(f"exif: unreadable ({_name(exc)})")
        return _result({}, problems)


def _parse(load_exif: Callable[[], Image.Exif], problems: list[str]) -> Geotag:
    try:
        exif = load_exif()
    except EXIF_ERRORS as exc:
        problems.append(f"exif: unreadable ({_name(exc)})")
        return _result({}, problems)

    gps = _ifd(exif, ExifTags.IFD.GPSInfo, "gps_ifd", problems)
    exif_ifd = _ifd(exif, ExifTags.IFD.Exif, "exif_ifd", problems)
    values: dict[str, Any] = {}

    position = _position(gps, problems)
    if position is not None:
        values["position"] = position
    altitude = _altitude(gps, problems)
    if altitude is not None:
        values["altitude"] = altitude
    direction = _field(problems, "gps_img_direction", _direction, gps.get(_GPS.GPSImgDirection))
    if direction is not None:
        values["direction"] = direction

    # Some writers put DateTimeOriginal in IFD0 instead of the Exif IFD.
    raw_date = exif_ifd.get(ExifTags.Base.DateTimeOriginal)
    if raw_date is None:
        raw_date = _get(exif, ExifTags.Base.DateTimeOriginal)
    taken_at = _field(problems, "datetime_original", _datetime, raw_date)
    raw_offset = exif_ifd.get(ExifTags.Base.OffsetTimeOriginal)
    offset = _field(problems, "offset_time_original", _offset, raw_offset)
    if offset is not None:
        values["offset"] = offset
    if taken_at is not None:
        values["taken_at"] = taken_at.replace(tzinfo=offset) if offset is not None else taken_at
    return _result(values, problems)


def _result(values: dict[str, Any], problems: list[str]) -> Geotag:
    lon, lat = values.get("position", (None, None))
    return Geotag(
        lon=lon,
        lat=lat,
        altitude_m=values.get("altitude"),
        direction_deg=values.get("direction"),
        taken_at=values.get("taken_at"),
        found=tuple(p for p in PARTS if p in values),
        missing=tuple(p for p in PARTS if p not in values),
        problems=tuple(problems),
    )


def _name(exc: BaseException) -> str:
    return "struct.error" if isinstance(exc, struct.error) else type(exc).__name__


def _ifd(exif: Image.Exif, tag: int, name: str, problems: list[str]) -> Mapping[int, Any]:
    """A sub-IFD as a mapping; a pointer to garbage gives an empty one plus a problem."""
    try:
        ifd = exif.get_ifd(tag)
    except EXIF_ERRORS as exc:
        problems.append(f"{name}: unreadable ({_name(exc)})")
        return {}
    return ifd if isinstance(ifd, Mapping) else {}


def _get(exif: Image.Exif, tag: int) -> Any:
    try:
        return exif.get(tag)
    except EXIF_ERRORS:
        return None


def _field(problems: list[str], name: str, parse: Callable[[Any], Any], raw: Any) -> Any:
    """Parse ``raw`` (``None`` = absent); an unusable value becomes a problem and ``None``."""
    if raw is None:
        return None
    try:
        return parse(raw)
    except _Unusable as exc:
        problems.append(f"{name}: {exc}")
        return None


# --- numbers -------------------------------------------------------------------------------------


def _number(value: Any) -> float:
    """A finite float from an EXIF rational/number; strings, bytes, bools and containers refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Unusable(f"not a number ({type(value).__name__})")
    try:
        if isinstance(value, numbers.Rational):  # IFDRational, Fraction, int
            if value.denominator == 0:
                raise _Unusable("denominator zero")
            # numerator/denominator rather than float(value): IFDRational turns x/0 into NaN
            # silently, and true division of big ints overflows loudly instead of going inf.
            result = value.numerator / value.denominator
        else:
            result = float(value)
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise _Unusable(f"not a usable number ({_name(exc)})") from None
    if not math.isfinite(result):
        raise _Unusable("not finite")
    return result


def _single(value: Any) -> Any:
    """Pillow unwraps one-element tuples, but hand-built EXIF may still have them."""
    if isinstance(value, tuple | list) and len(value) == 1:
        return value[0]
    return value


# --- position ------------------------------------------------------------------------------------


def _position(gps: Mapping[int, Any], problems: list[str]) -> tuple[float, float] | None:
    """(lon, lat) when both coordinates are usable; half a position is no position."""
    raw_lat, raw_lon = gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLongitude)
    if raw_lat is None and raw_lon is None:
        return None
    lat = _coordinate(gps, "latitude", _GPS.GPSLatitude, _GPS.GPSLatitudeRef, 90.0, problems)
    lon = _coordinate(gps, "longitude", _GPS.GPSLongitude, _GPS.GPSLongitudeRef, 180.0, problems)
    if lat is None or lon is None:
        return None
    if lat == 0.0 and lon == 0.0:
        # Receivers without a fix write zeros; "null island" is never a real field photo.
        problems.append("position: 0,0 is a placeholder for no GPS fix")
        return None
    return lon, lat


def _coordinate(
    gps: Mapping[int, Any], axis: str, tag: int, ref_tag: int, limit: float, problems: list[str]
) -> float | None:
    name = f"gps_{axis}"
    raw = gps.get(tag)
    if raw is None:
        problems.append(f"{name}: missing while the other coordinate is present")
        return None
    magnitude = _field(problems, name, _degrees, raw)
    if magnitude is None:
        return None
    if magnitude > limit:
        problems.append(f"{name}: out of range (more than {limit:g} degrees)")
        return None
    positive, negative = ("N", "S") if axis == "latitude" else ("E", "W")
    raw_ref = gps.get(ref_tag)
    if raw_ref is None:
        # Without a ref the sign is unknown; the EXIF-naive convention is N/E, but say so.
        problems.append(f"{name}_ref: missing, assumed {positive}")
        return magnitude
    ref = _field(problems, f"{name}_ref", _letter, raw_ref)
    if ref == positive:
        return magnitude
    if ref == negative:
        return -magnitude
    if ref is not None:
        problems.append(f"{name}_ref: not {positive} or {negative}")
    return None  # a sign we cannot trust makes the coordinate unusable


def _degrees(value: Any) -> float:
    """Degrees, minutes, seconds (three non-negative numbers) to decimal degrees."""
    if not isinstance(value, tuple | list):
        raise _Unusable(f"not degrees/minutes/seconds ({type(value).__name__})")
    if len(value) != 3:
        raise _Unusable(f"expected 3 values (degrees, minutes, seconds), got {len(value)}")
    degrees, minutes, seconds = (_number(v) for v in value)
    if degrees < 0 or minutes < 0 or seconds < 0:
        raise _Unusable("negative component (the sign belongs in the ref)")
    if minutes >= 60:
        raise _Unusable("minutes out of range (60 or more)")
    if seconds >= 60:
        raise _Unusable("seconds out of range (60 or more)")
    return degrees + minutes / 60 + seconds / 3600


def _letter(value: Any) -> str:
    """A one-letter ref as upper-case text; accepts bytes, lowercase, NUL/space padding."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", "replace")
    if not isinstance(value, str):
        raise _Unusable(f"not text ({type(value).__name__})")
    return value.strip("\x00 ").upper()


# --- altitude and direction ----------------------------------------------------------------------


def _altitude(gps: Mapping[int, Any], problems: list[str]) -> float | None:
    raw = gps.get(_GPS.GPSAltitude)
    if raw is None:
        return None
    value = _field(problems, "gps_altitude", _altitude_value, raw)
    if value is None:
        return None
    raw_ref = gps.get(_GPS.GPSAltitudeRef)
    if raw_ref is None:
        problems.append("gps_altitude_ref: missing, assumed above sea level")
        below = False
    else:
        below = _field(problems, "gps_altitude_ref", _altitude_ref, raw_ref)
        if below is None:
            return None
    altitude = -value if below else value
    if not MIN_ALTITUDE_M <= altitude <= MAX_ALTITUDE_M:
        problems.append(f"gps_altitude: out of range ({MIN_ALTITUDE_M:g} to {MAX_ALTITUDE_M:g} m)")
        return None
    return altitude


def _altitude_value(value: Any) -> float:
    altitude = _number(_single(value))
    if altitude < 0:
        raise _Unusable("negative (below sea level is said by gps_altitude_ref)")
    return altitude


def _altitude_ref(value: Any) -> bool:
    """True when the ref says below sea level (1); 0 is above. Byte, int or digit text."""
    value = _single(value)
    if isinstance(value, bytes | bytearray) and len(value) == 1:
        value = value[0] if value[0] in (0, 1) else chr(value[0])
    if isinstance(value, str) and value.strip("\x00 ") in ("0", "1"):
        value = int(value.strip("\x00 "))
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value == 1
    raise _Unusable("not 0 or 1")


def _direction(value: Any) -> float:
    degrees = _number(_single(value))
    if not 0 <= degrees <= 360:
        raise _Unusable("out of range (0 to 360 degrees)")
    return degrees % 360  # 360 is north, like 0


# --- time ----------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise _Unusable("not ASCII text") from None
    if not isinstance(value, str):
        raise _Unusable(f"not text ({type(value).__name__})")
    return value.strip("\x00 ")


def _datetime(value: Any) -> datetime | None:
    text = _text(value)
    if _BLANK_RE.fullmatch(text):
        return None  # the EXIF spelling of "unknown"
    match = _DATETIME_RE.fullmatch(text)
    if not match:
        raise _Unusable("not a date (expected YYYY:MM:DD HH:MM:SS)")
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise _Unusable(f"not a date (year outside {MIN_YEAR}-{MAX_YEAR})")
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise _Unusable("not a date (no such day or time)") from None


def _offset(value: Any) -> timezone | None:
    text = _text(value)
    if _BLANK_RE.fullmatch(text):
        return None
    if text.upper() == "Z":
        return UTC
    match = _OFFSET_RE.fullmatch(text)
    if not match:
        raise _Unusable("not an offset (expected +HH:MM)")
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    delta = timedelta(hours=hours, minutes=minutes)
    if minutes >= 60 or delta > MAX_OFFSET:
        raise _Unusable("offset out of range")
    return timezone(-delta if sign == "-" else delta)


# --- PNG without decoding ------------------------------------------------------------------------


def _png_exif_chunk(fp: IO[bytes]) -> bytes:
    """The eXIf chunk payload found by walking chunk headers (no inflating), or b""."""
    fp.seek(8)  # past the PNG signature
    while True:
        header = fp.read(8)
        if len(header) < 8:
            return b""
        length, kind = struct.unpack(">I4s", header)
        if kind == b"eXIf":
            if length > MAX_PNG_EXIF_BYTES:
                raise ValueError("eXIf chunk too large")
            return fp.read(length)
        if kind == b"IEND":
            return b""
        fp.seek(length + 4, io.SEEK_CUR)  # chunk data and CRC


def _exif_from_bytes(data: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(data)
    return exif
