"""Components (部件): register, import, query, snap a point to the nearest one, check a code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.codes import InvalidCode, validate_component, widen_legacy_component
from geo.errors import Conflict, InvalidInput, NotFound

SNAP_TOLERANCE_M = 15.0

_COLUMNS = """
    c.code, c.class_code, k.name AS class_name, u.code AS owner, u.name AS owner_name, c.status,
    c.attributes, c.generated, ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat
"""
_FROM = """
    FROM components c JOIN component_classes k ON k.code = c.class_code
    LEFT JOIN units u ON u.id = c.owner_unit_id
"""


def _component(row: Any) -> dict[str, Any]:
    return {
        "code": row.code,
        "class": row.class_code,
        "class_name": row.class_name,
        "owner": {"code": row.owner, "name": row.owner_name} if row.owner else None,
        "status": row.status,
        "attributes": row.attributes,
        "generated": row.generated,
        "location": {"lon": row.lon, "lat": row.lat},
        **({"distance_m": round(row.distance_m, 2)} if hasattr(row, "distance_m") else {}),
    }


def normalise_code(code: str) -> str:
    """A 17-digit component code; 16-digit GB/T 30428.2-2013 codes are widened."""
    code = code.strip()
    return widen_legacy_component(code) if len(code) == 16 else validate_component(code)


async def get(session: AsyncSession, code: str) -> dict[str, Any]:
    row = (
        await session.execute(text(f"SELECT {_COLUMNS} {_FROM} WHERE c.code = :code"), {"code": code})
    ).first()
    if row is None:
        raise NotFound(f"no component {code}")
    return _component(row)


@dataclass(frozen=True)
class ComponentQuery:
    code: str | None = None
    class_code: str | None = None
    owner: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    limit: int = 100
    offset: int = 0


async def search(session: AsyncSession, q: ComponentQuery) -> list[dict[str, Any]]:
    """Components by code prefix, class (5 digits or 2-digit major), owner unit code and bbox."""
    where = ["true"]
    params: dict[str, Any] = {"limit": q.limit, "offset": q.offset}
    if q.code:
        where.append("c.code LIKE :code")
        params["code"] = q.code + "%"
    if q.class_code:
        where.append("c.class_code LIKE :cls")
        params["cls"] = q.class_code + ("%" if len(q.class_code) == 2 else "")
    if q.owner:
        where.append("u.code = :owner")
        params["owner"] = q.owner
    if q.bbox:
        where.append("c.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490)")
        params.update(zip(("x0", "y0", "x1", "y1"), q.bbox, strict=True))
    rows = await session.execute(
        text(
            f"SELECT {_COLUMNS} {_FROM} WHERE {' AND '.join(where)} ORDER BY c.code LIMIT :limit OFFSET :offset"
        ),
        params,
    )
    return [_component(r) for r in rows]


_NEAREST = f"""
SELECT {_COLUMNS}, ST_Distance(c.geom::geography, p.g::geography) AS distance_m
{_FROM}, (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4490) AS g) p
WHERE c.class_code = :cls AND c.status = 'in_use'
  AND ST_DWithin(c.geom::geography, p.g::geography, :tol)
ORDER BY c.geom <-> p.g, c.code LIMIT 1
"""


async def snap(
    session: AsyncSession, lon: float, lat: float, class_code: str, tolerance_m: float = SNAP_TOLERANCE_M
) -> dict[str, Any] | None:
    """The nearest component of ``class_code`` within ``tolerance_m`` of a CGCS2000 point."""
    row = (
        await session.execute(text(_NEAREST), {"lon": lon, "lat": lat, "cls": class_code, "tol": tolerance_m})
    ).first()
    return _component(row) if row else None


async def check(
    session: AsyncSession,
    code: str,
    class_code: str,
    lon: float,
    lat: float,
    tolerance_m: float = SNAP_TOLERANCE_M,
) -> dict[str, Any]:
    """Does ``code`` exist, is it of ``class_code`` and does it lie near the point?"""
    try:
        code = normalise_code(code)
    except InvalidCode as exc:
        return {
            "code": code,
            "exists": False,
            "class_matches": False,
            "near": False,
            "distance_m": None,
            "problems": [exc.reason],
        }
    row = (
        await session.execute(
            text(
                "SELECT class_code, ST_Distance(geom::geography, "
                "ST_SetSRID(ST_MakePoint(:lon, :lat), 4490)::geography) AS d FROM components WHERE code = :code"
            ),
            {"code": code, "lon": lon, "lat": lat},
        )
    ).first()
    if row is None:
        return {
            "code": code,
            "exists": False,
            "class_matches": False,
            "near": False,
            "distance_m": None,
            "problems": ["no such component"],
        }
    problems = []
    if row.class_code != class_code:
        problems.append(f"the component is of class {row.class_code}, not {class_code}")
    if row.d > tolerance_m:
        problems.append(f"the component lies {row.d:.0f} m away (tolerance {tolerance_m:.0f} m)")
    return {
        "code": code,
        "exists": True,
        "class_matches": row.class_code == class_code,
        "near": row.d <= tolerance_m,
        "distance_m": round(row.d, 2),
        "problems": problems,
    }


_INSERT = """
INSERT INTO components (code, class_code, owner_unit_id, status, attributes, geom)
VALUES (:code, :cls, (SELECT id FROM units WHERE code = :owner), :status, CAST(:attrs AS jsonb),
        ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))
"""
_UPSERT = (
    _INSERT
    + """
ON CONFLICT (code) DO UPDATE SET class_code = EXCLUDED.class_code, owner_unit_id = EXCLUDED.owner_unit_id,
    status = EXCLUDED.status, attributes = EXCLUDED.attributes, geom = EXCLUDED.geom, updated_at = now()
"""
)


@dataclass(frozen=True)
class NewComponent:
    code: str
    class_code: str
    lon: float  # CGCS2000
    lat: float
    owner: str | None = None
    status: str = "in_use"
    attributes: dict[str, Any] | None = None


async def _check_refs(session: AsyncSession, items: list[NewComponent]) -> list[dict[str, str]]:
    classes = set(await session.scalars(text("SELECT code FROM component_classes")))
    units = set(await session.scalars(text("SELECT code FROM units")))
    errors = []
    for i, c in enumerate(items):
        where = f"[{i}] {c.code}"
        if c.class_code not in classes:
            errors.append({"field": f"{where}.class", "message": f"unknown component class {c.class_code}"})
        elif c.code[6:11] != c.class_code:
            errors.append(
                {"field": f"{where}.code", "message": f"the code's class part is not {c.class_code}"}
            )
        if c.owner and c.owner not in units:
            errors.append({"field": f"{where}.owner", "message": f"unknown unit {c.owner}"})
        if not (-180 <= c.lon <= 180 and -90 <= c.lat <= 90):
            errors.append({"field": f"{where}.location", "message": "coordinates out of range"})
    return errors


async def register(session: AsyncSession, item: NewComponent) -> dict[str, Any]:
    """Register one new component; 409 if the code exists."""
    try:
        item = NewComponent(**{**item.__dict__, "code": normalise_code(item.code)})
    except InvalidCode as exc:
        raise InvalidInput(exc.reason, errors=[{"field": "code", "message": exc.reason}]) from exc
    errors = await _check_refs(session, [item])
    if errors:
        raise InvalidInput("the component refers to unknown data", errors=errors)
    if await session.scalar(text("SELECT 1 FROM components WHERE code = :c"), {"c": item.code}):
        raise Conflict(f"component {item.code} exists already")
    await session.execute(text(_INSERT), _params(item))
    return await get(session, item.code)


def _params(c: NewComponent) -> dict[str, Any]:
    return {
        "code": c.code,
        "cls": c.class_code,
        "owner": c.owner,
        "status": c.status,
        "attrs": json.dumps(c.attributes or {}, ensure_ascii=False),
        "lon": c.lon,
        "lat": c.lat,
    }


def read_file(path: Path, crs: str | None = None) -> list[NewComponent]:
    """Components from GeoJSON, GeoPackage (points in any CRS) or CSV (lon/lat columns).

    Columns: ``code``, ``class`` (optional: taken from the code), ``owner`` (unit code),
    ``status``; other columns become attributes. CSV coordinates are in ``crs``
    (default CGCS2000/WGS 84 lon/lat, or one of gcj02/bd09).
    """
    import geopandas as gpd
    import pandas as pd

    from geo.crs import to_cgcs2000

    suffix = path.suffix.lower()
    errors: list[dict[str, str]] = []
    if suffix == ".csv":
        frame = pd.read_csv(path, dtype=str)
        cols = {c.lower(): c for c in frame.columns}
        lon_col = next((cols[c] for c in ("lon", "lng", "longitude", "x") if c in cols), None)
        lat_col = next((cols[c] for c in ("lat", "latitude", "y") if c in cols), None)
        if lon_col is None or lat_col is None:
            raise InvalidInput(
                "the CSV needs lon and lat columns", errors=[{"field": "file", "message": "no lon/lat"}]
            )
        lons = pd.to_numeric(frame[lon_col], errors="coerce").to_numpy()
        lats = pd.to_numeric(frame[lat_col], errors="coerce").to_numpy()
        frame = frame.drop(columns=[lon_col, lat_col])
    else:
        try:
            gdf = gpd.read_file(path, engine="pyogrio")
        except Exception as exc:  # pyogrio raises several unrelated types for unreadable files
            raise InvalidInput(
                f"cannot read {path.name}: {exc}", errors=[{"field": "file", "message": str(exc)}]
            ) from exc
        if gdf.crs is not None and gdf.crs.to_epsg() not in (4326, 4490):
            gdf = gdf.to_crs(4490)
        if not all(gdf.geometry.geom_type == "Point"):
            raise InvalidInput(
                "components must be points", errors=[{"field": "file", "message": "non-point geometry"}]
            )
        lons, lats = gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()
        frame = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    if crs:
        lons, lats = to_cgcs2000(lons, lats, crs)
    items: list[NewComponent] = []
    for i, (record, lon, lat) in enumerate(zip(frame.to_dict("records"), lons, lats, strict=True)):
        record = {k: v for k, v in record.items() if v is not None and v == v}  # drop NaN
        raw_code = str(record.pop("code", "")).strip()
        try:
            code = normalise_code(raw_code)
        except InvalidCode as exc:
            errors.append({"field": f"[{i}].code", "message": f"{raw_code!r}: {exc.reason}"})
            continue
        if lon != lon or lat != lat:
            errors.append({"field": f"[{i}].location", "message": "missing coordinates"})
            continue
        items.append(
            NewComponent(
                code=code,
                class_code=str(record.pop("class", code[6:11])),
                lon=float(lon),
                lat=float(lat),
                owner=record.pop("owner", None),
                status=str(record.pop("status", "in_use")),
                attributes={
                    k: (v if isinstance(v, int | float | bool) else str(v)) for k, v in record.items()
                },
            )
        )
    if errors:
        raise InvalidInput(
            f"{len(errors)} rows of {path.name} are invalid; nothing was imported", errors=errors
        )
    return items


async def import_components(session: AsyncSession, items: list[NewComponent]) -> int:
    """Upsert a whole file's components, all or nothing."""
    errors = await _check_refs(session, items)
    if errors:
        raise InvalidInput(f"{len(errors)} problems; nothing was imported", errors=errors)
    if items:
        await session.execute(text(_UPSERT), [_params(c) for c in items])
    return len(items)
