"""Real test photos: JPEGs made by Pillow with EXIF GPS written by piexif."""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from fractions import Fraction

import piexif
from PIL import Image


def _dms(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = Fraction((value - degrees - minutes / 60) * 3600).limit_denominator(10000)
    return (degrees, 1), (minutes, 1), (seconds.numerator, seconds.denominator)


def jpeg(
    lon: float | None = None,
    lat: float | None = None,
    taken_at: datetime | None = None,
    size: tuple[int, int] = (640, 480),
    color: tuple[int, int, int] = (120, 160, 90),
    orientation: int | None = None,
    quality: int = 85,
) -> bytes:
    """A JPEG whose EXIF says where (WGS 84) and when it was taken."""
    image = Image.new("RGB", size, color)
    # A little texture so the encoder has something to do and every photo differs.
    for x in range(0, size[0], 37):
        for y in range(0, size[1], 29):
            image.putpixel((x, y), ((x * 7) % 256, (y * 3) % 256, (x + y) % 256))
    # A unique description: two photos taken by a test are never the same bytes by accident.
    exif: dict = {
        "0th": {piexif.ImageIFD.ImageDescription: uuid.uuid4().hex.encode()},
        "Exif": {},
        "GPS": {},
        "1st": {},
    }
    if orientation:
        exif["0th"][piexif.ImageIFD.Orientation] = orientation
    if lon is not None and lat is not None:
        exif["GPS"] = {
            piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
            piexif.GPSIFD.GPSLatitude: _dms(lat),
            piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
            piexif.GPSIFD.GPSLongitude: _dms(lon),
        }
    if taken_at is not None:
        exif["Exif"][piexif.ExifIFD.DateTimeOriginal] = taken_at.strftime("%Y:%m:%d %H:%M:%S").encode()
        if taken_at.utcoffset() is not None:
            offset = taken_at.strftime("%z")
            exif["Exif"][piexif.ExifIFD.OffsetTimeOriginal] = f"{offset[:3]}:{offset[3:]}".encode()
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=piexif.dump(exif))
    return out.getvalue()


def oversized(n_bytes: int) -> bytes:
    """JPEG magic followed by ``n_bytes`` of noise: refused for its size before any decoding."""
    import os

    return b"\xff\xd8\xff\xe0" + os.urandom(n_bytes)
