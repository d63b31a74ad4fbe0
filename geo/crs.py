"""Coordinate systems: WGS 84, CGCS2000, GCJ-02 (火星坐标) and BD-09 (百度坐标).

Geometry is stored in CGCS2000 (EPSG:4490). Points arrive from GPS (WGS 84), AMap/Tencent
(GCJ-02, 国测局坐标) or Baidu (BD-09, GCJ-02 plus Baidu's second offset). WGS 84 and CGCS2000
differ by centimetres here, far below handheld GPS accuracy, so they are taken as equal.

Every function takes scalars or numpy arrays (broadcast together) and returns the same kind:
Python floats for scalar input, new float64 arrays otherwise. Bad input raises
``InvalidCoordinates`` (HTTP 422 through ``api.errors``).

GCJ-02 and BD-09 are published only as forward formulas (the well-known ones used by
eviltransform, coordtransform, prcoords…); their inverses here are iterated until the forward
transform of the result is within ``INVERSE_TOLERANCE_DEG`` (< 1 mm) of the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from typing import Any

import numpy as np
from pyproj import Geod, Transformer
from pyproj.exceptions import CRSError

from geo.errors import InvalidInput

__all__ = [
    "CRS",
    "INVERSE_TOLERANCE_DEG",
    "InvalidCoordinates",
    "bd09_to_gcj02",
    "bd09_to_gcj02_approx",
    "bd09_to_wgs84",
    "distance_m",
    "from_cgcs2000",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "in_china",
    "parse_crs",
    "project",
    "transformer",
    "unproject",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]


class CRS(StrEnum):
    """The coordinate systems a client may send lon/lat in; a ``str`` (``str(CRS.gcj02) == "gcj02"``)."""

    wgs84 = "wgs84"  # GPS, EPSG:4326
    cgcs2000 = "cgcs2000"  # 2000国家大地坐标系, EPSG:4490, what the database stores
    gcj02 = "gcj02"  # 火星坐标: AMap, Tencent, Apple/Google maps inside China
    bd09 = "bd09"  # 百度坐标: Baidu maps and SDK


class InvalidCoordinates(InvalidInput, ValueError):
    """Coordinates that are not numbers, not finite, out of range, or in an unknown system.

    An ``InvalidInput`` so that ``api.errors`` answers 422; a ``ValueError`` for plain callers.
    """

    code = "invalid_coordinates"
    title = "The coordinates are not valid"


# GCJ-02 mixes the Krasovsky 1940 ellipsoid into its offset formula (not the WGS 84 one).
_GCJ_A = 6378245.0
_GCJ_EE = 0.00669342162296594323
# BD-09's second offset works in units of pi*3000/180 per degree.
_X_PI = math.pi * 3000.0 / 180.0

# The rough rectangle every common implementation uses for "in China" (out_of_china).
CHINA_BBOX = (72.004, 0.8293, 137.8347, 55.8271)  # min lon, min lat, max lon, max lat

INVERSE_TOLERANCE_DEG = 1e-9  # about 0.1 mm
_MAX_ITERATIONS = 30  # a handful suffice: both offsets change slowly with position

# CGCS2000's ellipsoid has GRS80's a and f (only GM and omega differ): same geodesics.
_GEOD = Geod(ellps="GRS80")
_GEOGRAPHIC_EPSG = 4490


# --- input and output -------------------------------------------------------------------------


def _as_float(value: Any, name: str) -> np.ndarray:
    try:
        # numpy turns None into NaN, which would hide a missing value behind "not finite".
        if value is None:
            raise TypeError(name)
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidCoordinates(
            f"{name} must be a number or an array of numbers, got {value!r}",
            errors=[{"field": name, "message": "not a number"}],
        ) from exc


def _first_bad(arr: np.ndarray, bad: np.ndarray) -> str:
    if arr.ndim == 0:
        return repr(float(arr))
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    where = idx[0] if len(idx) == 1 else idx
    return f"{float(arr[idx])!r} at index {where} ({int(bad.sum())} bad values)"


def _check_range(arr: np.ndarray, name: str, limit: float) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        message = "must be a finite number (no NaN or infinity)"
        raise InvalidCoordinates(
            f"{name} {message}: {_first_bad(arr, ~finite)}",
            errors=[{"field": name, "message": message}],
        )
    outside = np.abs(arr) > limit
    if outside.any():
        message = f"must be within [-{limit:g}, {limit:g}] degrees"
        raise InvalidCoordinates(
            f"{name} {message}: {_first_bad(arr, outside)}",
            errors=[{"field": name, "message": message}],
        )


def _broadcast(x: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    try:
        bx, by = np.broadcast_arrays(x, y)
    except ValueError as exc:
        raise InvalidCoordinates(
            f"{names[0]} and {names[1]} have incompatible shapes {x.shape} and {y.shape}",
            errors=[{"field": names[1], "message": "shape does not match " + names[0]}],
        ) from exc
    # broadcast_arrays returns read-only views; callers get fresh arrays they may modify.
    return np.array(bx, dtype=np.float64), np.array(by, dtype=np.float64)


def _scalar_lonlat(lon: Any, lat: Any) -> tuple[float, float] | None:
    """Both plain, valid numbers (one point: the request path), or None for the array path,
    which also words every error."""
    if type(lon) in (float, int) and type(lat) in (float, int) and -180 <= lon <= 180 and -90 <= lat <= 90:
        return float(lon), float(lat)  # NaN fails the comparisons, infinities the bounds
    return None


def _lonlat(
    lon: Any, lat: Any, lon_name: str = "lon", lat_name: str = "lat"
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validated float64 copies of lon/lat, broadcast together, and whether both were scalars."""
    x, y = _as_float(lon, lon_name), _as_float(lat, lat_name)
    _check_range(x, lon_name, 180.0)
    _check_range(y, lat_name, 90.0)
    scalar = x.ndim == 0 and y.ndim == 0
    x, y = _broadcast(x, y, (lon_name, lat_name))
    return x, y, scalar


def _out(x: np.ndarray, y: np.ndarray, scalar: bool) -> tuple[Any, Any]:
    if scalar:
        return float(x), float(y)
    return x, y


# --- the "in China" rectangle -----------------------------------------------------------------


def _in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    min_lon, min_lat, max_lon, max_lat = CHINA_BBOX
    return (lon >= min_lon) & (lon <= max_lon) & (lat >= min_lat) & (lat <= max_lat)


def in_china(lon: Any, lat: Any) -> bool | np.ndarray:
    """Inside the rough China rectangle where GCJ-02/BD-09 offsets apply (the usual ``out_of_china``).

    Bounds are inclusive, as in eviltransform and coordtransform. It is a rectangle, not a
    border: Seoul is "in", Tokyo is not. NaN or out-of-range input is simply not in China.
    """
    x, y = _as_float(lon, "lon"), _as_float(lat, "lat")
    inside = _in_china(*_broadcast(x, y, ("lon", "lat")))
    return bool(inside) if inside.ndim == 0 else inside


# --- GCJ-02 (火星坐标) -------------------------------------------------------------------------


def _gcj02_offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The GCJ-02 offset (degrees) at a WGS 84 point, everywhere (no China test)."""
    x = lon - 105.0
    y = lat - 35.0
    # Terms in the classic order so results match published tables to the last bits.
    sqrt_abs_x = np.sqrt(np.abs(x))
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
    dlat = dlat + common
    dlat = dlat + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    dlat = dlat + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
    dlon = dlon + common
    dlon = dlon + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    dlon = dlon + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    # The polynomials give metres; turn them into degrees on the Krasovsky ellipsoid.
    rad_lat = lat / 180.0 * np.pi
    magic = np.sin(rad_lat)
    magic = 1.0 - _GCJ_EE * magic * magic
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_GCJ_A * (1.0 - _GCJ_EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_GCJ_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    return dlon, dlat


def _wgs84_to_gcj02_raw(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dlon, dlat = _gcj02_offset(lon, lat)
    return lon + dlon, lat + dlat


def _gcj02_to_bd09_raw(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.sqrt(lon * lon + lat * lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _bd09_to_gcj02_onestep(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The closed form everyone copies: it subtracts the perturbations evaluated at the BD-09
    # point instead of the GCJ-02 one, hence its decimetre-level error.
    x = lon - 0.0065
    y = lat - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def _invert(
    forward: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    lon: np.ndarray,
    lat: np.ndarray,
    guess_lon: np.ndarray,
    guess_lat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve forward(p) = (lon, lat) by fixed-point iteration from a guess.

    Both offsets are nearly constant over the few hundred metres they move a point, so
    p <- p - (forward(p) - target) contracts fast (3-5 rounds to 1e-9 degrees). Only points
    still off by more than the tolerance are iterated further.
    """
    flat_lon, flat_lat = lon.ravel(), lat.ravel()
    out_lon, out_lat = guess_lon.ravel().copy(), guess_lat.ravel().copy()
    active = np.arange(out_lon.size)
    for _ in range(_MAX_ITERATIONS):
        f_lon, f_lat = forward(out_lon[active], out_lat[active])
        r_lon = f_lon - flat_lon[active]
        r_lat = f_lat - flat_lat[active]
        pending = (np.abs(r_lon) >= INVERSE_TOLERANCE_DEG) | (np.abs(r_lat) >= INVERSE_TOLERANCE_DEG)
        if not pending.any():
            break
        active, r_lon, r_lat = active[pending], r_lon[pending], r_lat[pending]
        out_lon[active] -= r_lon
        out_lat[active] -= r_lat
    return out_lon.reshape(lon.shape), out_lat.reshape(lat.shape)


def wgs84_to_gcj02(lon: Any, lat: Any) -> tuple[Any, Any]:
    """WGS 84 → GCJ-02 (火星坐标). Identity outside the China rectangle."""
    x, y, scalar = _lonlat(lon, lat)
    inside = _in_china(x, y)
    if inside.any():
        gx, gy = _wgs84_to_gcj02_raw(x[inside], y[inside])
        x[inside], y[inside] = gx, gy
    return _out(x, y, scalar)


def gcj02_to_wgs84(lon: Any, lat: Any) -> tuple[Any, Any]:
    """GCJ-02 (火星坐标) → WGS 84, exact to ``INVERSE_TOLERANCE_DEG``. Identity outside China.

    Unlike the common one-step inverse (metre-level error), the result is iterated until
    ``wgs84_to_gcj02`` of it lands within 1e-9 degrees of the input.
    """
    x, y, scalar = _lonlat(lon, lat)
    inside = _in_china(x, y)
    if inside.any():
        gx, gy = x[inside], y[inside]
        dx, dy = _gcj02_offset(gx, gy)
        # The forward is applied without the China test: a point just inside the rectangle may
        # come from one just outside it, and the offset formula itself is defined everywhere.
        x[inside], y[inside] = _invert(_wgs84_to_gcj02_raw, gx, gy, gx - dx, gy - dy)
    return _out(x, y, scalar)


# --- BD-09 (百度坐标) --------------------------------------------------------------------------


def gcj02_to_bd09(lon: Any, lat: Any) -> tuple[Any, Any]:
    """GCJ-02 → BD-09 (百度坐标). Identity outside the China rectangle, like GCJ-02 itself."""
    x, y, scalar = _lonlat(lon, lat)
    inside = _in_china(x, y)
    if inside.any():
        x[inside], y[inside] = _gcj02_to_bd09_raw(x[inside], y[inside])
    return _out(x, y, scalar)


def bd09_to_gcj02(lon: Any, lat: Any) -> tuple[Any, Any]:
    """BD-09 (百度坐标) → GCJ-02, exact to ``INVERSE_TOLERANCE_DEG``. Identity outside China.

    Starts from the usual closed-form inverse (``bd09_to_gcj02_approx``, off by up to a few
    decimetres) and refines it with the forward formula.
    """
    x, y, scalar = _lonlat(lon, lat)
    inside = _in_china(x, y)
    if inside.any():
        bx, by = x[inside], y[inside]
        gx, gy = _bd09_to_gcj02_onestep(bx, by)
        x[inside], y[inside] = _invert(_gcj02_to_bd09_raw, bx, by, gx, gy)
    return _out(x, y, scalar)


def bd09_to_gcj02_approx(lon: Any, lat: Any) -> tuple[Any, Any]:
    """The common one-step BD-09 → GCJ-02 formula (coordtransform, eviltransform), not iterated.

    Kept for comparison with other systems' output; use ``bd09_to_gcj02`` for data.
    """
    x, y, scalar = _lonlat(lon, lat)
    inside = _in_china(x, y)
    if inside.any():
        x[inside], y[inside] = _bd09_to_gcj02_onestep(x[inside], y[inside])
    return _out(x, y, scalar)


def wgs84_to_bd09(lon: Any, lat: Any) -> tuple[Any, Any]:
    """WGS 84 → BD-09 (百度坐标), through GCJ-02."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: Any, lat: Any) -> tuple[Any, Any]:
    """BD-09 (百度坐标) → WGS 84, through GCJ-02 (each step exact to 1e-9 degrees)."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


# --- CGCS2000 ---------------------------------------------------------------------------------


def parse_crs(crs: CRS | str) -> CRS:
    """The ``CRS`` for an enum member or its name (case and surrounding blanks ignored)."""
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, str):
        try:
            return CRS(crs.strip().lower())
        except ValueError:
            pass
    known = ", ".join(c.value for c in CRS)
    raise InvalidCoordinates(
        f"unknown coordinate system {crs!r}; expected one of {known}",
        errors=[{"field": "crs", "message": f"must be one of {known}"}],
    )


def to_cgcs2000(lon: Any, lat: Any, crs: CRS | str) -> tuple[Any, Any]:
    """Lon/lat in ``crs`` → CGCS2000 lon/lat (EPSG:4490), what the database stores."""
    system = parse_crs(crs)
    if system is CRS.gcj02:
        return gcj02_to_wgs84(lon, lat)
    if system is CRS.bd09:
        return bd09_to_wgs84(lon, lat)
    # WGS 84 = CGCS2000 to a few centimetres: no datum shift worth applying to GPS fixes.
    return _scalar_lonlat(lon, lat) or _out(*_lonlat(lon, lat))


def from_cgcs2000(lon: Any, lat: Any, crs: CRS | str) -> tuple[Any, Any]:
    """CGCS2000 lon/lat (EPSG:4490) → lon/lat in ``crs`` (e.g. for AMap or Baidu map clients)."""
    system = parse_crs(crs)
    if system is CRS.gcj02:
        return wgs84_to_gcj02(lon, lat)
    if system is CRS.bd09:
        return wgs84_to_bd09(lon, lat)
    return _out(*_lonlat(lon, lat))


# --- projections and distances (pyproj) -------------------------------------------------------


@lru_cache(maxsize=32)
def transformer(source_epsg: int, target_epsg: int) -> Transformer:
    """A cached pyproj Transformer, always lon/lat (x/y) order whatever the EPSG axis order."""
    try:
        return Transformer.from_crs(f"EPSG:{source_epsg}", f"EPSG:{target_epsg}", always_xy=True)
    except CRSError as exc:
        raise InvalidCoordinates(
            f"unknown EPSG code in {source_epsg} -> {target_epsg}",
            errors=[{"field": "epsg", "message": "unknown EPSG code"}],
        ) from exc


def _finite_xy(x: np.ndarray, y: np.ndarray, what: str) -> None:
    # PROJ answers inf for points it cannot transform instead of raising.
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise InvalidCoordinates(
            f"{what} cannot be transformed: {_first_bad(x, bad)}",
            errors=[{"field": "coordinates", "message": "cannot be transformed"}],
        )


def project(lon: Any, lat: Any, epsg: int = 4546) -> tuple[Any, Any]:
    """CGCS2000 lon/lat → projected x/y in metres (default EPSG:4546, 3° Gauss-Krüger CM 111°E).

    Always (x, y): easting, northing for EPSG:4546; Web Mercator x, y for EPSG:3857.
    """
    x, y, scalar = _lonlat(lon, lat)
    px, py = transformer(_GEOGRAPHIC_EPSG, int(epsg)).transform(x, y)
    px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    _finite_xy(px, py, f"lon/lat in EPSG:{epsg}")
    return _out(px, py, scalar)


def unproject(x: Any, y: Any, epsg: int = 4546) -> tuple[Any, Any]:
    """Projected x/y in metres (default EPSG:4546) → CGCS2000 lon/lat."""
    px, py = _as_float(x, "x"), _as_float(y, "y")
    scalar = px.ndim == 0 and py.ndim == 0
    px, py = _broadcast(px, py, ("x", "y"))
    _finite_xy(px, py, "x/y")
    lon, lat = transformer(int(epsg), _GEOGRAPHIC_EPSG).transform(px, py)
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    _finite_xy(lon, lat, f"x/y in EPSG:{epsg}")
    return _out(lon, lat, scalar)


_MEAN_RADIUS_M = 6_371_008.8  # GRS80 mean radius (2a + b) / 3


def spherical_distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two valid points, on the mean sphere: within
    0.5% of :func:`distance_m`, for thresholds on the request path. Plain Python: a pyproj
    call releases the GIL, and on a busy event loop getting it back costs more than the sum."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * _MEAN_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def distance_m(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> Any:
    """Geodesic distance in metres on the CGCS2000 (GRS80) ellipsoid; float or array."""
    x1, y1, scalar1 = _lonlat(lon1, lat1, "lon1", "lat1")
    x2, y2, scalar2 = _lonlat(lon2, lat2, "lon2", "lat2")
    try:
        x1, y1, x2, y2 = np.broadcast_arrays(x1, y1, x2, y2)
    except ValueError as exc:
        raise InvalidCoordinates(
            f"the two points' arrays have incompatible shapes {x1.shape} and {x2.shape}",
            errors=[{"field": "lon2", "message": "shape does not match lon1"}],
        ) from exc
    # Geod.inv wants contiguous writable buffers of equal size; ravel and reshape back.
    shape = x1.shape
    _, _, dist = _GEOD.inv(*(np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (x1, y1, x2, y2)))
    dist = np.asarray(dist, dtype=np.float64).reshape(shape)
    return float(dist) if scalar1 and scalar2 else dist
