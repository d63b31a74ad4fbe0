"""Geotags from photo EXIF (geo.exif) and upload image checks (geo.images). No database.

Images are real files written by Pillow; EXIF is written by piexif (or by Pillow's own Exif API
for values piexif refuses to encode, such as strings where rationals belong).
"""

from __future__ import annotations

import io
import json
import math
import random
import struct
import warnings
import zlib
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import piexif
import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, PngImagePlugin, WebPImagePlugin
from PIL.TiffImagePlugin import IFDRational

from geo.exif import PARTS, Geotag, read_geotag, read_geotag_file
from geo.images import (
    ACCEPTED_FORMATS,
    ImageRejected,
    inspect_image,
    make_thumbnail,
    render_public,
)

GPS = piexif.GPSIFD
GPS_IFD = ExifTags.IFD.GPSInfo
EXIF_IFD = ExifTags.IFD.Exif

# Huaihua, Hunan: 27°33'30" N, 109°59'0" E.
LAT, LON = 27 + 33 / 60 + 30 / 3600, 109 + 59 / 60


# --- builders ----------------------------------------------------------------------------------


def dms(value: float) -> tuple[tuple[int, int], ...]:
    """Decimal degrees as the EXIF (degrees, minutes, seconds) rationals piexif writes."""
    hundredths = round(value * 360_000)  # whole hundredths of a second: no float rounding below
    degrees, rest = divmod(hundredths, 360_000)
    minutes, seconds = divmod(rest, 6_000)
    return ((degrees, 1), (minutes, 1), (seconds, 100))


def gps_ifd(lat_ref: Any = "N", lon_ref: Any = "E", **extra: Any) -> dict[int, Any]:
    ifd: dict[int, Any] = {GPS.GPSLatitude: dms(LAT), GPS.GPSLongitude: dms(LON)}
    if lat_ref is not None:
        ifd[GPS.GPSLatitudeRef] = lat_ref
    if lon_ref is not None:
        ifd[GPS.GPSLongitudeRef] = lon_ref
    ifd.update({getattr(GPS, k): v for k, v in extra.items()})
    return ifd


def exif_bytes(
    gps: dict[int, Any] | None = None,
    exif: dict[int, Any] | None = None,
    orientation: int | None = None,
) -> bytes:
    zeroth = {piexif.ImageIFD.Orientation: orientation} if orientation else {}
    return piexif.dump({"0th": zeroth, "Exif": exif or {}, "GPS": gps or {}})


def jpeg(size: tuple[int, int] = (64, 32), exif: bytes | None = None, **save: Any) -> bytes:
    """A real JPEG from Pillow, with ``exif`` inserted by piexif."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG", **save)
    if exif is None:
        return buffer.getvalue()
    out = io.BytesIO()
    piexif.insert(exif, buffer.getvalue(), out)
    return out.getvalue()


def encoded(fmt: str, exif: bytes, size: tuple[int, int] = (64, 32), **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, fmt, exif=exif, **save)
    return buffer.getvalue()


def halves(size: tuple[int, int] = (400, 200)) -> Image.Image:
    """Left half red, right half blue: shows where the image went after rotation."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def with_gps(values: dict[int, Any], exif_values: dict[int, Any] | None = None) -> Image.Image:
    """An in-memory image whose GPS/Exif IFDs hold arbitrary Python values (Pillow's Exif API)."""
    image = Image.new("RGB", (8, 8))
    exif = image.getexif()
    exif.get_ifd(GPS_IFD).update({k: as_pillow(v) for k, v in values.items()})
    exif.get_ifd(EXIF_IFD).update(exif_values or {})
    return image


def as_pillow(value: Any) -> Any:
    """piexif's ((num, den), ...) rationals as the IFDRational tuples Pillow reads back."""
    pairs = (
        isinstance(value, tuple)
        and value
        and all(isinstance(v, tuple) and len(v) == 2 and all(type(n) is int for n in v) for v in value)
    )
    return tuple(IFDRational(n, d) for n, d in value) if pairs else value


def png_chunks(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        kinds.append(kind)
        pos += 12 + length
    return kinds


def riff_chunks(data: bytes) -> list[bytes]:
    kinds, pos = [], 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[pos : pos + 8])
        kinds.append(kind)
        pos += 8 + length + (length & 1)
    return kinds


def assert_partition(tag: Geotag) -> None:
    assert set(tag.found) | set(tag.missing) == set(PARTS)
    assert not set(tag.found) & set(tag.missing)
    json.dumps(tag.as_dict(), allow_nan=False)  # JSON-ready: no NaN/inf, no datetimes


# --- good geotags --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_full_geotag_in_every_format(fmt: str) -> None:
    raw = exif_bytes(
        gps_ifd(
            GPSAltitudeRef=0,
            GPSAltitude=(2515, 10),
            GPSImgDirectionRef="T",
            GPSImgDirection=(18050, 100),
        ),
        {
            piexif.ExifIFD.DateTimeOriginal: "2026:11:26 09:31:00",
            piexif.ExifIFD.OffsetTimeOriginal: "+08:00",
        },
    )
    data = jpeg(exif=raw) if fmt == "JPEG" else encoded(fmt, raw)
    assert Image.open(io.BytesIO(data)).format == fmt

    tag = read_geotag_file(data)

    assert tag.lat == pytest.approx(LAT) and tag.lon == pytest.approx(LON)
    assert tag.altitude_m == pytest.approx(251.5)
    assert tag.direction_deg == pytest.approx(180.5)
    assert tag.taken_at == datetime(2026, 11, 26, 9, 31, tzinfo=timezone(timedelta(hours=8)))
    assert tag.found == ("position", "altitude", "direction", "taken_at", "offset")
    assert tag.missing == () and tag.problems == ()
    assert tag.as_dict() == {
        "lon": tag.lon,
        "lat": tag.lat,
        "altitude_m": 251.5,
        "direction_deg": 180.5,
        "taken_at": "2026-11-26T09:31:00+08:00",
        "found": ["position", "altitude", "direction", "taken_at", "offset"],
        "missing": [],
        "problems": [],
    }
    assert read_geotag(Image.open(io.BytesIO(data))) == tag


def test_path_and_file_object_sources(tmp_path: Path) -> None:
    data = jpeg(exif=exif_bytes(gps_ifd()))
    path = write(tmp_path / "p.jpg", data)
    assert read_geotag_file(path) == read_geotag_file(str(path)) == read_geotag_file(data)
    assert read_geotag_file(io.BytesIO(data)).lat == pytest.approx(LAT)
    with pytest.raises(FileNotFoundError):
        read_geotag_file(tmp_path / "missing.jpg")


@pytest.mark.parametrize(
    ("lat_ref", "lon_ref", "signs"),
    [("N", "E", (1, 1)), ("S", "W", (-1, -1)), ("S", "E", (-1, 1)), ("N", "W", (1, -1))],
)
def test_refs_give_signs(lat_ref: str, lon_ref: str, signs: tuple[int, int]) -> None:
    tag = read_geotag_file(jpeg(exif=exif_bytes(gps_ifd(lat_ref, lon_ref))))
    assert (tag.lat, tag.lon) == pytest.approx((signs[0] * LAT, signs[1] * LON))
    assert tag.problems == ()


@pytest.mark.parametrize(
    ("lat_ref", "lon_ref"),
    [(b"S", b"W"), ("s", "w"), (b"s\x00", b"w\x00"), ("S\x00", "W\x00"), (" s ", bytearray(b"w"))],
)
def test_refs_in_bytes_lowercase_or_padded(lat_ref: Any, lon_ref: Any) -> None:
    tag = read_geotag(with_gps(gps_ifd(lat_ref, lon_ref)))
    assert tag.lat == pytest.approx(-LAT) and tag.lon == pytest.approx(-LON)
    assert tag.problems == ()


def test_altitude_below_sea_level_and_direction() -> None:
    raw = exif_bytes(gps_ifd(GPSAltitudeRef=1, GPSAltitude=(4305, 10), GPSImgDirection=(90, 1)))
    tag = read_geotag_file(jpeg(exif=raw))
    assert tag.altitude_m == pytest.approx(-430.5)
    assert tag.direction_deg == 90.0
    assert tag.problems == ()


@pytest.mark.parametrize("ref", [1, b"\x01", b"1", "1", (1,)])
def test_altitude_ref_spellings(ref: Any) -> None:
    tag = read_geotag(with_gps({**gps_ifd(), GPS.GPSAltitude: 12, GPS.GPSAltitudeRef: ref}))
    assert tag.altitude_m == -12.0 and tag.problems == ()


def test_taken_at_without_offset_is_naive() -> None:
    raw = exif_bytes(exif={piexif.ExifIFD.DateTimeOriginal: "2026:11:26 09:31:00"})
    tag = read_geotag_file(jpeg(exif=raw))
    assert tag.taken_at == datetime(2026, 11, 26, 9, 31)
    assert tag.taken_at.tzinfo is None
    assert tag.found == ("taken_at",)
    assert tag.missing == ("position", "altitude", "direction", "offset")
    assert tag.as_dict()["taken_at"] == "2026-11-26T09:31:00"


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ("+08:00", timedelta(hours=8)),
        ("-05:30", timedelta(hours=-5, minutes=-30)),
        ("+00:00", timedelta(0)),
        (b"+14:00\x00", timedelta(hours=14)),
    ],
)
def test_offsets(offset: Any, expected: timedelta) -> None:
    image = with_gps({}, {36867: "2026:11:26 09:31:00", 36881: offset})
    tag = read_geotag(image)
    assert tag.taken_at is not None and tag.taken_at.utcoffset() == expected
    assert "offset" in tag.found and tag.problems == ()


def test_no_exif_at_all() -> None:
    tag = read_geotag_file(jpeg())
    assert tag == Geotag(None, None, None, None, None, (), PARTS, ())


def test_exif_without_gps() -> None:
    tag = read_geotag_file(jpeg(exif=exif_bytes(orientation=6)))
    assert tag.found == () and tag.missing == PARTS and tag.problems == ()


def test_blank_exif_unknown_date_is_missing_not_a_problem() -> None:
    image = with_gps({}, {36867: "    :  :     :  :  ", 36881: "   :  "})
    tag = read_geotag(image)
    assert tag.taken_at is None and tag.problems == ()


# --- hostile values ------------------------------------------------------------------------------


def problems_of(tag: Geotag, prefix: str) -> list[str]:
    return [p for p in tag.problems if p.startswith(prefix)]


@pytest.mark.parametrize(
    ("latitude", "problem"),
    [
        (((27, 0), (33, 1), (30, 1)), "gps_latitude: denominator zero"),
        (((0, 0), (0, 0), (0, 0)), "gps_latitude: denominator zero"),
        (((27, 1), (60, 1), (0, 1)), "gps_latitude: minutes out of range"),
        (((27, 1), (3, 1), (6000, 100)), "gps_latitude: seconds out of range"),
        (((91, 1), (0, 1), (0, 1)), "gps_latitude: out of range"),
        (((90, 1), (0, 1), (1, 1)), "gps_latitude: out of range"),
        (((4294967295, 1), (4294967295, 1), (0, 1)), "gps_latitude: minutes out of range"),
        (((4294967295, 1), (0, 1), (0, 1)), "gps_latitude: out of range"),
        (((27, 1), (33, 1)), "gps_latitude: expected 3 values"),
        (((27, 1),), "gps_latitude: not degrees/minutes/seconds"),
    ],
)
def test_unusable_latitude_in_real_file(latitude: Any, problem: str) -> None:
    raw = exif_bytes({**gps_ifd(), GPS.GPSLatitude: latitude})
    tag = read_geotag_file(jpeg(exif=raw))
    assert tag.lat is None and tag.lon is None
    assert "position" in tag.missing
    assert any(p.startswith(problem) for p in tag.problems), tag.problems
    assert_partition(tag)


def test_longitude_over_180() -> None:
    raw = exif_bytes({**gps_ifd(), GPS.GPSLongitude: ((180, 1), (0, 1), (1, 1))})
    tag = read_geotag_file(jpeg(exif=raw))
    assert tag.lon is None and problems_of(tag, "gps_longitude: out of range")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("27.5", "not degrees/minutes/seconds (str)"),
        (b"27 33 30", "not degrees/minutes/seconds (bytes)"),
        (27.5, "not degrees/minutes/seconds (float)"),
        ((27, 33), "expected 3 values (degrees, minutes, seconds), got 2"),
        ((27, 33, 30, 1), "expected 3 values (degrees, minutes, seconds), got 4"),
        (("27", "33", "30"), "not a number (str)"),
        ((27, (33, 1), 30), "not a number (tuple)"),
        (((1, 2), [3], {"a": 1}), "not a number (tuple)"),
        ((27, None, 30), "not a number (NoneType)"),
        ((True, 0, 0), "not a number (bool)"),
        ((float("nan"), 0, 0), "not finite"),
        ((float("inf"), 0, 0), "not finite"),
        ((10**400, 0, 0), "not a usable number (OverflowError)"),
        ((Fraction(10**400, 3), 0, 0), "not a usable number (OverflowError)"),
        ((IFDRational(27, 0), 0, 0), "denominator zero"),
        ((-27, 33, 30), "negative component"),
        ((IFDRational(27, 1), IFDRational(-33, 1), 0), "negative component"),
    ],
)
def test_garbage_latitude_values(value: Any, problem: str) -> None:
    tag = read_geotag(with_gps({**gps_ifd(), GPS.GPSLatitude: value}))
    assert tag.lat is None and tag.lon is None
    assert problems_of(tag, f"gps_latitude: {problem}"), tag.problems
    assert_partition(tag)


def test_missing_refs_assume_north_east_and_say_so() -> None:
    tag = read_geotag_file(jpeg(exif=exif_bytes(gps_ifd(None, None))))
    assert (tag.lat, tag.lon) == pytest.approx((LAT, LON))
    assert tag.problems == (
        "gps_latitude_ref: missing, assumed N",
        "gps_longitude_ref: missing, assumed E",
    )


@pytest.mark.parametrize("ref", ["X", "E", "", "NORTH", 7, (b"N",), b"\xff"])
def test_bad_ref_makes_position_unusable(ref: Any) -> None:
    tag = read_geotag(with_gps(gps_ifd(lat_ref=ref)))
    assert tag.lat is None and tag.lon is None
    assert problems_of(tag, "gps_latitude_ref:"), tag.problems


def test_half_a_position_is_no_position() -> None:
    raw = exif_bytes({GPS.GPSLatitudeRef: "N", GPS.GPSLatitude: dms(LAT)})
    tag = read_geotag_file(jpeg(exif=raw))
    assert tag.lat is None and tag.lon is None
    assert tag.problems == ("gps_longitude: missing while the other coordinate is present",)


def test_null_island_is_no_fix() -> None:
    zero = ((0, 1), (0, 1), (0, 1))
    raw = exif_bytes({**gps_ifd(), GPS.GPSLatitude: zero, GPS.GPSLongitude: zero})
    tag = read_geotag_file(jpeg(exif=raw))
    assert tag.lat is None and problems_of(tag, "position: 0,0")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({GPS.GPSAltitude: IFDRational(5, 0), GPS.GPSAltitudeRef: 0}, "gps_altitude: denominator"),
        ({GPS.GPSAltitude: "high", GPS.GPSAltitudeRef: 0}, "gps_altitude: not a number (str)"),
        ({GPS.GPSAltitude: (1, 2), GPS.GPSAltitudeRef: 0}, "gps_altitude: not a number (tuple)"),
        ({GPS.GPSAltitude: 1e9, GPS.GPSAltitudeRef: 0}, "gps_altitude: out of range"),
        ({GPS.GPSAltitude: 20_000, GPS.GPSAltitudeRef: 1}, "gps_altitude: out of range"),
        ({GPS.GPSAltitude: -5, GPS.GPSAltitudeRef: 0}, "gps_altitude: negative"),
        ({GPS.GPSAltitude: float("nan"), GPS.GPSAltitudeRef: 0}, "gps_altitude: not finite"),
        ({GPS.GPSAltitude: 5, GPS.GPSAltitudeRef: 2}, "gps_altitude_ref: not 0 or 1"),
        ({GPS.GPSAltitude: 5, GPS.GPSAltitudeRef: "below"}, "gps_altitude_ref: not 0 or 1"),
        ({GPS.GPSImgDirection: IFDRational(1, 0)}, "gps_img_direction: denominator zero"),
        ({GPS.GPSImgDirection: 400}, "gps_img_direction: out of range"),
        ({GPS.GPSImgDirection: -1}, "gps_img_direction: out of range"),
        ({GPS.GPSImgDirection: float("inf")}, "gps_img_direction: not finite"),
        ({GPS.GPSImgDirection: [1, 2, 3]}, "gps_img_direction: not a number (list)"),
    ],
)
def test_unusable_altitude_and_direction(extra: dict[int, Any], problem: str) -> None:
    tag = read_geotag(with_gps({**gps_ifd(), **extra}))
    assert any(p.startswith(problem) for p in tag.problems), tag.problems
    assert tag.lat == pytest.approx(LAT)  # one broken field does not spoil the others
    if GPS.GPSAltitude in extra:
        assert tag.altitude_m is None and "altitude" in tag.missing
    else:
        assert tag.direction_deg is None and "direction" in tag.missing
    assert_partition(tag)


def test_altitude_without_ref_is_above_sea_level_with_a_note() -> None:
    tag = read_geotag_file(jpeg(exif=exif_bytes(gps_ifd(GPSAltitude=(120, 1)))))
    assert tag.altitude_m == 120.0
    assert tag.problems == ("gps_altitude_ref: missing, assumed above sea level",)


def test_direction_360_is_north() -> None:
    tag = read_geotag(with_gps({GPS.GPSImgDirection: IFDRational(360, 1)}))
    assert tag.direction_deg == 0.0 and tag.found == ("direction",)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0000:00:00 00:00:00", "datetime_original: not a date"),
        ("2026:13:26 09:31:00", "datetime_original: not a date"),
        ("2026:02:30 09:31:00", "datetime_original: not a date"),
        ("2026:11:26 25:31:00", "datetime_original: not a date"),
        ("2026:11:26 09:61:00", "datetime_original: not a date"),
        ("2026:11:26", "datetime_original: not a date"),
        ("yesterday", "datetime_original: not a date"),
        ("0001:01:01 00:00:00", "datetime_original: not a date (year"),
        ("9999:12:31 23:59:59", "datetime_original: not a date (year"),
        ("2026:11:26 09:31:00" * 1000, "datetime_original: not a date"),
        (b"2026:11:26 \xff9:31:00", "datetime_original: not ASCII"),
        (20261126, "datetime_original: not text (int)"),
        (("2026:11:26 09:31:00",), "datetime_original: not text (tuple)"),
    ],
)
def test_bad_datetimes(value: Any, problem: str) -> None:
    tag = read_geotag(with_gps({}, {36867: value, 36881: "+08:00"}))
    assert tag.taken_at is None and "taken_at" in tag.missing
    assert any(p.startswith(problem) for p in tag.problems), tag.problems


def test_zero_datetime_from_a_real_file() -> None:
    raw = exif_bytes(exif={piexif.ExifIFD.DateTimeOriginal: "0000:00:00 00:00:00"})
    tag = read_geotag_file(jpeg(exif=raw))
    assert tag.taken_at is None
    assert problems_of(tag, "datetime_original: not a date")


@pytest.mark.parametrize("offset", ["+8", "08:00", "+08:60", "+15:00", "-14:30", "UTC+8", 8])
def test_bad_offset_keeps_a_naive_time(offset: Any) -> None:
    tag = read_geotag(with_gps({}, {36867: "2026:11:26 09:31:00", 36881: offset}))
    assert tag.taken_at == datetime(2026, 11, 26, 9, 31) and tag.taken_at.tzinfo is None
    assert "offset" in tag.missing
    assert problems_of(tag, "offset_time_original:")


def test_datetime_in_ifd0_and_dash_separators() -> None:
    image = Image.new("RGB", (8, 8))
    image.getexif()[ExifTags.Base.DateTimeOriginal] = "2026-11-26 09:31:00"
    assert read_geotag(image).taken_at == datetime(2026, 11, 26, 9, 31)


def gps_pointer_offset(raw: bytes) -> int:
    """Where piexif (big-endian TIFF) stored the value of IFD0's GPSInfo pointer."""
    assert raw[6:8] == b"MM"
    return raw.index(struct.pack(">HHI", GPS_IFD, 4, 1)) + 8


@pytest.mark.parametrize("pointer", [0xFFFFFFF0, 1, 9, 0x7FFFFFFF])
def test_gps_pointer_to_garbage(pointer: int) -> None:
    raw = bytearray(exif_bytes(gps_ifd(), {piexif.ExifIFD.DateTimeOriginal: "2026:11:26 09:31:00"}))
    at = gps_pointer_offset(bytes(raw))
    raw[at : at + 4] = struct.pack(">I", pointer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corrupt IFD it skips
        tag = read_geotag_file(jpeg(exif=bytes(raw)))
    assert tag.lat is None and tag.lon is None
    assert tag.taken_at == datetime(2026, 11, 26, 9, 31)  # the rest of the EXIF still counts
    assert_partition(tag)


@pytest.mark.parametrize("keep", [6, 7, 10, 14, 30, 60, 100, -40, -10])
def test_truncated_exif_blocks(keep: int) -> None:
    raw = exif_bytes(gps_ifd(GPSAltitude=(5, 1)), {piexif.ExifIFD.DateTimeOriginal: "2026:11:26 09:31:00"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tag = read_geotag_file(jpeg(exif=raw[:keep]))
    assert_partition(tag)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_not_a_tiff_header_is_a_problem(fmt: str) -> None:
    raw = b"Exif\x00\x00XX*\x00garbage"
    data = jpeg(exif=raw) if fmt == "JPEG" else encoded(fmt, raw)
    assert read_geotag_file(data).problems == ("exif: unreadable (SyntaxError)",)
    assert read_geotag(Image.open(io.BytesIO(data))).problems == ("exif: unreadable (SyntaxError)",)


def test_not_an_image_gives_an_empty_tag() -> None:
    tag = read_geotag_file(b"hello, this is not a photo")
    assert tag.found == () and problems_of(tag, "image: cannot be opened")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_hostile_exif_never_raises_even_when_warnings_are_errors(fmt: str) -> None:
    raw = bytearray(exif_bytes(gps_ifd()))
    at = gps_pointer_offset(bytes(raw))
    raw[at : at + 4] = struct.pack(">I", 0xFFFFFFF0)
    data = jpeg(exif=bytes(raw)) if fmt == "JPEG" else encoded(fmt, bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "corrupt EXIF" warning now raises
        tag = read_geotag_file(data)
        assert read_geotag(Image.open(io.BytesIO(data))) == tag
    assert tag.lat is None and tag.problems == ("exif: unreadable (UserWarning)",)
    assert_partition(tag)


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 24)):
        action = rng.random()
        at = rng.randrange(6, len(data))  # keep the "Exif\0\0" prefix piexif.insert needs
        if action < 0.6:
            data[at] = rng.randrange(256)
        elif action < 0.8:
            data[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff"])
        elif action < 0.9:
            del data[at : at + rng.randint(1, 16)]
        else:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        if len(data) <= 8:
            break
    if rng.random() < 0.2:
        data = data[: rng.randrange(6, len(data) + 1)]
    return bytes(data)


@pytest.mark.parametrize("warning_action", ["ignore", "error"])
def test_fuzzed_exif_never_raises(warning_action: str) -> None:
    rng = random.Random(20261126)
    raw = exif_bytes(
        gps_ifd("S", "W", GPSAltitudeRef=1, GPSAltitude=(2515, 10), GPSImgDirection=(18050, 100)),
        {
            piexif.ExifIFD.DateTimeOriginal: "2026:11:26 09:31:00",
            piexif.ExifIFD.OffsetTimeOriginal: "+08:00",
        },
        orientation=6,
    )
    base = jpeg()
    outcomes = set()
    with warnings.catch_warnings():
        warnings.simplefilter(warning_action)
        for _ in range(300):
            out = io.BytesIO()
            piexif.insert(mutate(raw, rng), base, out)
            tag = read_geotag_file(out.getvalue())
            assert_partition(tag)
            for value in (tag.lat, tag.lon, tag.altitude_m, tag.direction_deg):
                assert value is None or math.isfinite(value)
            if tag.lat is not None:
                assert tag.lon is not None and -90 <= tag.lat <= 90 and -180 <= tag.lon <= 180
            outcomes.add((bool(tag.found), bool(tag.problems)))
    assert len(outcomes) > 1  # the mutations did reach the parser


# --- lazy reading ------------------------------------------------------------------------------


def test_read_geotag_file_does_not_decode_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    data = {fmt: encoded(fmt, exif_bytes(gps_ifd())) for fmt in ("JPEG", "PNG", "WEBP")}
    for cls in (ImageFile.ImageFile, PngImagePlugin.PngImageFile, WebPImagePlugin.WebPImageFile):
        monkeypatch.setattr(cls, "load", no_decoding)
    for blob in data.values():
        assert read_geotag_file(blob).lat == pytest.approx(LAT)
    # A PNG without eXIf before IDAT: Pillow would decode to look behind the pixels.
    assert read_geotag_file(encoded("PNG", b"")).found == ()


def test_png_exif_after_the_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded("PNG", exif_bytes(gps_ifd("S", "W")))
    start = data.index(b"eXIf") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    chunk, rest = data[start : start + 12 + length], data[:start] + data[start + 12 + length :]
    iend = rest.index(b"IEND") - 4
    moved = rest[:iend] + chunk + rest[iend:]
    assert png_chunks(moved)[-2:] == [b"eXIf", b"IEND"]

    assert read_geotag(Image.open(io.BytesIO(moved))).lat == pytest.approx(-LAT)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: 1 / 0)
    tag = read_geotag_file(moved)
    assert (tag.lat, tag.lon) == pytest.approx((-LAT, -LON))


# --- image checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_inspect_accepts_the_three_formats(tmp_path: Path, fmt: str) -> None:
    raw = exif_bytes(gps_ifd(), orientation=6)
    path = write(tmp_path / "upload.bin", encoded(fmt, raw, size=(400, 200)))
    info = inspect_image(path)
    assert (info.format, info.content_type) == (fmt, ACCEPTED_FORMATS[fmt])
    assert (info.width, info.height, info.orientation) == (400, 200, 6)
    assert info.display_size == (200, 400)
    assert info.geotag.lat == pytest.approx(LAT)


def test_declared_name_does_not_matter(tmp_path: Path) -> None:
    path = write(tmp_path / "photo.jpg", encoded("PNG", b""))
    assert inspect_image(path).content_type == "image/png"


def test_multi_picture_jpeg_is_a_jpeg(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16)).save(buffer, "MPO", save_all=True, append_images=[Image.new("RGB", (32, 16))])
    info = inspect_image(write(tmp_path / "stereo.jpg", buffer.getvalue()))
    assert (info.format, info.content_type) == ("JPEG", "image/jpeg")


def rejected(path: Path, **kwargs: Any) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        inspect_image(path, **kwargs)
    return caught.value


def test_text_file_named_jpg_is_unsupported(tmp_path: Path) -> None:
    error = rejected(write(tmp_path / "notes.jpg", b"just some text, honest\n" * 20))
    assert error.code == "unsupported_media_type" and isinstance(error, ValueError)
    assert error.message == str(error)


def test_empty_file_is_unsupported(tmp_path: Path) -> None:
    assert rejected(write(tmp_path / "empty.jpg", b"")).code == "unsupported_media_type"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_unsupported(tmp_path: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, fmt)
    assert rejected(write(tmp_path / "x.jpg", buffer.getvalue())).code == "unsupported_media_type"


def noisy(size: tuple[int, int] = (256, 256), fmt: str = "JPEG") -> bytes:
    """Random pixels: nothing compresses away, so a cut really loses image data."""
    rng = random.Random(7)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("fraction", [0.2, 0.6, 0.95])
def test_truncated_jpeg_is_unsupported(tmp_path: Path, fraction: float) -> None:
    data = noisy()
    path = write(tmp_path / "cut.jpg", data[: int(len(data) * fraction)])
    error = rejected(path)
    assert error.code == "unsupported_media_type" and "cannot be decoded" in error.message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_truncated_png_and_webp_are_unsupported(tmp_path: Path, fmt: str) -> None:
    data = noisy(fmt=fmt)
    path = write(tmp_path / "cut", data[: len(data) // 2])
    assert rejected(path).code == "unsupported_media_type"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR (with a valid CRC) claims ``width``×``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "green").save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_png_claiming_100000_squared_is_too_large(tmp_path: Path) -> None:
    data = png_claiming(100_000, 100_000)
    assert struct.unpack(">II", data[16:24]) == (100_000, 100_000)
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    path = write(tmp_path / "bomb.png", data)
    error = rejected(path)  # 10^10 pixels: decoding would need ~30 GB, so nothing was decoded
    assert error.code == "image_too_large"


def test_pixel_limit_is_checked_explicitly(tmp_path: Path) -> None:
    # 8000×8000 is below Pillow's own bomb limit but above ours.
    error = rejected(write(tmp_path / "big.png", png_claiming(8000, 8000)))
    assert error.code == "image_too_large" and "64000000" in error.message
    small = write(tmp_path / "small.png", encoded("PNG", b"", size=(400, 200)))
    assert rejected(small, max_pixels=400 * 200 - 1).code == "image_too_large"
    assert inspect_image(small, max_pixels=400 * 200).width == 400
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # global left alone


def test_pillow_bomb_warning_becomes_a_rejection(tmp_path: Path) -> None:
    # 10000×10000 is between Pillow's warning and error thresholds; even a caller allowing
    # 10^9 pixels gets a rejection, whether the warning is merely shown or escalated.
    path = write(tmp_path / "warn.png", png_claiming(10_000, 10_000))
    with pytest.warns(Image.DecompressionBombWarning):
        assert rejected(path, max_pixels=10**9).code == "image_too_large"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rejected(path, max_pixels=10**9).code == "image_too_large"


def test_fuzzed_uploads_are_accepted_or_rejected_never_crash(tmp_path: Path) -> None:
    rng = random.Random(42)
    sources = [noisy((64, 64))] + [
        encoded(fmt, exif_bytes(gps_ifd()), size=(64, 64)) for fmt in ("PNG", "WEBP")
    ]
    path = tmp_path / "fuzz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in sources:
            for _ in range(60):
                data = bytearray(source)
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                path.write_bytes(bytes(data[: rng.randrange(1, len(data) + 1)]))
                try:
                    info = inspect_image(path)
                except ImageRejected as error:
                    assert error.code in ("unsupported_media_type", "image_too_large")
                else:
                    assert info.format in ACCEPTED_FORMATS


# --- thumbnails and public copies --------------------------------------------------------------


def oriented(tmp_path: Path, fmt: str, orientation: int = 6, **save: Any) -> Path:
    """A 400×200 left-red/right-blue image stored sideways with an EXIF Orientation."""
    raw = exif_bytes(
        gps_ifd(), {piexif.ExifIFD.DateTimeOriginal: "2026:11:26 09:31:00"}, orientation=orientation
    )
    path = tmp_path / f"src.{fmt.lower()}"
    halves().save(path, fmt, exif=raw, **save)
    return path


def colour(image: Image.Image, xy: tuple[int, int]) -> str:
    r, _, b = image.convert("RGB").getpixel(xy)
    return "red" if r > b else "blue"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_thumbnail_is_small_upright_and_bare(tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / "thumb.jpg"
    size = make_thumbnail(oriented(tmp_path, fmt), dest)

    with Image.open(dest) as thumb:
        assert thumb.format == "JPEG" and thumb.size == size
        assert max(size) <= 320 and size[0] < size[1]  # 400×200 with orientation 6: portrait
        assert size == (160, 320)
        # Orientation 6 means "rotate 90° clockwise": the stored left (red) half ends on top.
        assert colour(thumb, (80, 40)) == "red" and colour(thumb, (80, 280)) == "blue"
        assert not thumb.getexif() and "exif" not in thumb.info
    assert b"Exif" not in dest.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_thumbnail_of_a_large_jpeg_and_small_sizes(tmp_path: Path) -> None:
    src = write(tmp_path / "big.jpg", noisy((2000, 1500)))
    assert make_thumbnail(src, tmp_path / "t.jpg") == (320, 240)
    assert make_thumbnail(src, tmp_path / "t64.jpg", size=64) == (64, 48)
    tiny = write(tmp_path / "tiny.jpg", jpeg(size=(10, 5)))
    assert make_thumbnail(tiny, tmp_path / "t2.jpg") == (10, 5)  # never enlarged


def test_thumbnail_flattens_transparency_onto_white(tmp_path: Path) -> None:
    src = tmp_path / "alpha.png"
    Image.new("RGBA", (100, 100), (255, 0, 0, 0)).save(src)
    make_thumbnail(src, tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as thumb:
        assert thumb.mode == "RGB"
        assert min(thumb.getpixel((50, 50))) > 240


def test_thumbnail_of_16_bit_grey_is_not_white(tmp_path: Path) -> None:
    src = tmp_path / "grey16.png"
    Image.new("I;16", (40, 40), 32768).save(src)
    make_thumbnail(src, tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as thumb:
        assert 120 <= thumb.getpixel((20, 20)) <= 135


def test_thumbnail_rejects_what_inspect_rejects(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected) as caught:
        make_thumbnail(write(tmp_path / "bomb.png", png_claiming(100_000, 100_000)), tmp_path / "t")
    assert caught.value.code == "image_too_large"
    assert not (tmp_path / "t").exists()


def test_hostile_exif_does_not_break_rotation(tmp_path: Path) -> None:
    # GPSAltitudeRef (a BYTE tag) stored as text: Pillow 13's ImageOps.exif_transpose re-serialises
    # the EXIF after rotating and raises TypeError on it. Thumbnails and public copies must work.
    raw = bytearray(exif_bytes({GPS.GPSLatitudeRef: "S"}, orientation=6))
    at = raw.index(struct.pack(">HHI", GPS.GPSLatitudeRef, 2, 2))
    raw[at : at + 2] = struct.pack(">H", GPS.GPSAltitudeRef)
    src = tmp_path / "odd.jpg"
    buffer = io.BytesIO()
    halves().save(buffer, "JPEG")
    piexif.insert(bytes(raw), buffer.getvalue(), str(src))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert inspect_image(src).orientation == 6
        assert make_thumbnail(src, tmp_path / "t.jpg") == (160, 320)
        render_public(src, tmp_path / "p.jpg")
    with Image.open(tmp_path / "p.jpg") as out:
        assert out.size == (200, 400) and colour(out, (100, 50)) == "red"


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
    b'syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" '
    b'exif:GPSLatitude="27,33.5N"/></rdf:RDF></x:xmpmeta>'
)


def test_render_public_jpeg_has_no_metadata_and_is_upright(tmp_path: Path) -> None:
    src = oriented(tmp_path, "JPEG", icc_profile=srgb_icc(), comment=b"secret-note", xmp=XMP)
    with Image.open(src) as original:  # the source really carries all of it
        assert {"exif", "icc_profile", "comment", "xmp"} <= set(original.info)
        assert read_geotag(original).lat == pytest.approx(LAT)
    dest = tmp_path / "public.jpg"

    render_public(src, dest)

    with Image.open(dest) as out:
        assert out.format == "JPEG" and out.size == (200, 400)
        assert not out.getexif() and "exif" not in out.info
        assert not {"icc_profile", "comment", "xmp"} & set(out.info)
        assert read_geotag(out).found == ()
        assert colour(out, (100, 50)) == "red" and colour(out, (100, 350)) == "blue"
    make_thumbnail(src, tmp_path / "thumb.jpg")
    for written in (dest, tmp_path / "thumb.jpg"):
        data = written.read_bytes()
        for marker in (b"Exif", b"ICC_PROFILE", b"http://ns.adobe.com/xap/1.0/", b"secret-note"):
            assert marker not in data


def test_render_public_png_keeps_only_pixel_chunks(tmp_path: Path) -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret-note")
    text.add_itxt("XML:com.adobe.xmp", XMP.decode())
    src = oriented(tmp_path, "PNG", pnginfo=text, icc_profile=srgb_icc())
    assert {b"eXIf", b"iCCP", b"tEXt", b"iTXt"} <= set(png_chunks(src.read_bytes()))
    dest = tmp_path / "public.png"

    render_public(src, dest)

    assert set(png_chunks(dest.read_bytes())) == {b"IHDR", b"IDAT", b"IEND"}
    with Image.open(dest) as out:
        assert out.format == "PNG" and out.size == (200, 400)
        assert not out.getexif() and "exif" not in out.info
        assert colour(out, (100, 50)) == "red" and colour(out, (100, 350)) == "blue"


def test_render_public_png_keeps_palette_transparency(tmp_path: Path) -> None:
    src = tmp_path / "palette.png"
    image = Image.new("P", (20, 10), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.save(src, transparency=0, exif=exif_bytes(gps_ifd(), orientation=8))
    render_public(src, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "P" and out.info.get("transparency") == 0 and out.size == (10, 20)
        assert not out.getexif()


def test_render_public_webp_has_no_metadata_chunks(tmp_path: Path) -> None:
    src = oriented(tmp_path, "WEBP", icc_profile=srgb_icc(), xmp=XMP)
    assert {b"EXIF", b"ICCP", b"XMP "} <= set(riff_chunks(src.read_bytes()))
    dest = tmp_path / "public.webp"

    render_public(src, dest)

    assert not {b"EXIF", b"ICCP", b"XMP "} & set(riff_chunks(dest.read_bytes()))
    with Image.open(dest) as out:
        assert out.format == "WEBP" and out.size == (200, 400)
        assert not out.getexif() and "exif" not in out.info
        assert colour(out, (100, 50)) == "red" and colour(out, (100, 350)) == "blue"


def test_render_public_without_orientation_keeps_the_size(tmp_path: Path) -> None:
    src = write(tmp_path / "plain.jpg", jpeg(size=(120, 80), exif=exif_bytes(gps_ifd())))
    render_public(src, tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.size == (120, 80) and not out.getexif()


def test_render_public_rejects_non_images(tmp_path: Path) -> None:
    with pytest.raises(ImageRejected) as caught:
        render_public(write(tmp_path / "x.webp", b"RIFF\x00\x00\x00\x00WEBPnope"), tmp_path / "o")
    assert caught.value.code == "unsupported_media_type"


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_every_colour_model_of_jpeg_passes_the_luminance_check(tmp_path: Path, mode: str) -> None:
    """The check decodes colour JPEGs to luminance only; grey and CMYK files keep their own."""
    buffer = io.BytesIO()
    Image.new(mode, (640, 480)).save(buffer, "JPEG")
    info = inspect_image(write(tmp_path / "x.jpg", buffer.getvalue()))
    assert (info.format, info.width, info.height) == ("JPEG", 640, 480)
