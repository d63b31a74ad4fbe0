"""Uploaded photos: format, size and decodability checks, thumbnails, metadata-free public copies.

The real format is what Pillow finds in the file header, never the declared content type or
name. Only the JPEG, PNG and WebP decoders ever see uploaded bytes. Pixel limits are checked
explicitly from the header before any decode; the global ``Image.MAX_IMAGE_PIXELS`` is left alone.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from geo.exif import EXIF_ERRORS, Geotag, read_geotag, read_orientation

__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_PIXELS",
    "ImageInfo",
    "ImageRejected",
    "inspect_image",
    "make_thumbnail",
    "render_public",
]

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_PIXELS = 40_000_000

# Pillow reports multi-picture JPEGs (several phone and stereo cameras write them) as "MPO";
# they are ordinary JPEG files to browsers and to us.
_ALIASES = {"MPO": "JPEG"}
# Restricting Image.open to these plugins keeps every other decoder away from uploaded bytes.
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP")

# What Pillow's decoders raise on truncated or corrupt data.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
)

# Same table as ImageOps.exif_transpose, for when that helper fails (see _upright).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_NOT_ACCEPTED = "The file is not a JPEG, PNG or WebP image."
_UNDECODABLE = "The image cannot be decoded (truncated or corrupt)."

RejectionCode = Literal["unsupported_media_type", "image_too_large"]


class ImageRejected(ValueError):
    """An upload that must be refused; ``code`` is stable snake_case for the API."""

    def __init__(self, code: RejectionCode, message: str) -> None:
        super().__init__(message)
        self.code: RejectionCode = code
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    """What an accepted image is. ``width``/``height`` are as stored, before EXIF rotation."""

    format: str  # key of ACCEPTED_FORMATS
    content_type: str
    width: int
    height: int
    geotag: Geotag
    orientation: int  # EXIF Orientation 1-8, 1 when absent or invalid

    @property
    def display_size(self) -> tuple[int, int]:
        """Size as shown after rotation: orientations 5-8 swap width and height."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


def inspect_image(path: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check that ``path`` (or an open binary file) is a decodable JPEG/PNG/WebP of at most
    ``max_pixels`` pixels.

    Raises :class:`ImageRejected`; a path that cannot be read raises ``OSError`` (caller's error).
    """
    with _open_image(path, max_pixels) as (image, fmt):
        width, height = image.size
        # A JPEG decoded at 1/8 scale, luminance only, still runs through all of its
        # entropy-coded data (every component's), so truncation and corruption show up at a
        # fraction of the cost of a full decode.
        _decode(image, fmt, draft=(max(1, width // 8), max(1, height // 8)), mode="L")
        return ImageInfo(
            format=fmt,
            content_type=ACCEPTED_FORMATS[fmt],
            width=width,
            height=height,
            geotag=read_geotag(image),
            orientation=read_orientation(image),
        )


def make_thumbnail(
    src: str | Path, dest: str | Path, size: int = 320, *, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Write an upright JPEG thumbnail (quality 80, no metadata) fitting ``size``×``size``.

    Returns its (width, height). Raises :class:`ImageRejected` like :func:`inspect_image`.
    """
    if size < 1:
        raise ValueError("size must be positive")
    with _open_image(src, max_pixels) as (image, fmt):
        # Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale, still at least 2×size.
        _decode(image, fmt, draft=(size * 2, size * 2))
        thumb = _upright(image)
        thumb.thumbnail((size, size))
        thumb = _to_srgb(thumb, image.info.get("icc_profile"))
        thumb = _opaque(thumb)
        thumb.info = {}  # JPEG save would copy a comment from info
        _save_atomic(thumb, dest, "JPEG", quality=80)
        return thumb.size


def render_public(src: str | Path, dest: str | Path, *, max_pixels: int = MAX_PIXELS) -> None:
    """Write an upright copy without any metadata (EXIF, GPS, XMP, ICC, comments, text chunks).

    The format family is kept (JPEG→JPEG, PNG→PNG, WebP→WebP); animations keep their first
    frame. Colours tagged with an ICC profile are converted to sRGB before the profile is dropped.
    """
    with _open_image(src, max_pixels) as (image, fmt):
        _decode(image, fmt)
        public = _upright(image)
        if "transparency" not in image.info:  # a tRNS colour key would no longer match
            public = _to_srgb(public, image.info.get("icc_profile"))
        # Palette transparency is pixel data, not metadata; everything else in info goes.
        keep = ("transparency",) if fmt == "PNG" else ()
        public.info = {k: v for k, v in image.info.items() if k in keep}
        params: dict[str, Any] = {"JPEG": {"quality": 90}, "WEBP": {"quality": 90}}.get(fmt, {})
        _save_atomic(public, dest, fmt, **params)


@contextmanager
def _open_image(path: str | Path | BinaryIO, max_pixels: int) -> Iterator[tuple[ImageFile.ImageFile, str]]:
    """Open lazily (header only), check format and pixel count, yield (image, format)."""
    # Opening the path is outside the try: a missing file is not a bad upload.
    with open(path, "rb") if isinstance(path, str | Path) else nullcontext(path) as fp:
        try:
            image = Image.open(fp, formats=_PILLOW_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow's own limit (the warning only arrives as an exception under strict filters).
            raise ImageRejected("image_too_large", f"The image has too many pixels ({exc}).") from exc
        except UnidentifiedImageError as exc:
            raise ImageRejected("unsupported_media_type", _NOT_ACCEPTED) from exc
        except (*_DECODE_ERRORS, Warning) as exc:
            # Warning: corrupt-data warnings (e.g. about EXIF) that strict filters escalate;
            # Pillow then refuses to open the file, so it cannot be decoded either.
            raise ImageRejected("unsupported_media_type", _UNDECODABLE) from exc
        with image:
            fmt = _ALIASES.get(image.format or "", image.format or "")
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected("unsupported_media_type", _NOT_ACCEPTED)
            _check_pixels(image.size, max_pixels)
            yield image, fmt


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageRejected("unsupported_media_type", _UNDECODABLE)
    # Whatever Pillow would warn about as a decompression bomb is refused too, so the warning
    # never has to be turned into an error through the (process-global) warning filters.
    limit = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, Image.MAX_IMAGE_PIXELS)
    if width * height > limit:
        raise ImageRejected(
            "image_too_large",
            f"The image has {width}×{height} = {width * height} pixels; at most {limit} are allowed.",
        )


def _decode(
    image: ImageFile.ImageFile, fmt: str, draft: tuple[int, int] | None = None, mode: str = "RGB"
) -> None:
    """Decode the pixels (JPEG at reduced scale when ``draft`` is given, in ``mode`` where the
    decoder can convert: colour JPEGs to "L") or reject the file."""
    try:
        if draft is not None and fmt == "JPEG":
            image.draft(mode, draft)
        image.load()
    except (*_DECODE_ERRORS, Warning) as exc:  # Warning: see _open_image
        raise ImageRejected("unsupported_media_type", _UNDECODABLE) from exc


def _upright(image: Image.Image) -> Image.Image:
    """A new image rotated/flipped as its EXIF Orientation says (like ImageOps.exif_transpose)."""
    try:
        return ImageOps.exif_transpose(image)
    except (*EXIF_ERRORS, Warning):
        # exif_transpose re-serialises the remaining EXIF after rotating, which raises on hostile
        # tags (found by fuzzing); the metadata is discarded here anyway, so rotate directly.
        method = _TRANSPOSE.get(read_orientation(image))
        return image.transpose(method) if method is not None else image.copy()


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert colours to sRGB so that dropping the ICC profile does not shift them."""
    if not icc_profile or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        from PIL import ImageCms

        return ImageCms.profileToProfile(
            image,
            ImageCms.ImageCmsProfile(io.BytesIO(icc_profile)),
            ImageCms.createProfile("sRGB"),
            outputMode="RGB" if image.mode == "CMYK" else image.mode,
        )
    except (ImportError, OSError, ValueError, TypeError):  # ImageCms.PyCMSError is an OSError
        # A broken profile (or Pillow without LittleCMS): keep the pixels as they are.
        return image


def _opaque(image: Image.Image) -> Image.Image:
    """RGB or L for JPEG: transparency is flattened onto white, 16-bit grey scaled to 8 bits."""
    if image.mode in ("RGB", "L"):
        return image
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # Converting 16-bit samples straight to 8 bits clips everything above 255 to white.
        return image.convert("I").point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def _save_atomic(image: Image.Image, dest: str | Path, fmt: str, **params: Any) -> None:
    """Save next to ``dest`` and rename, so readers never see a half-written file."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as fp:  # normal umask permissions, unlike mkstemp's 0600
            image.save(fp, format=fmt, **params)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
