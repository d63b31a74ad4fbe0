"""Responsibility areas (责任区域): polygons whose matters belong to an owner unit.

The boundaries nobody has drawn — a property-managed compound (物业管理区域) against the
public road, a park, a road section under a maintenance contract, a construction site, a river
bank — are data here, so the dispatch rules can say "inside an area of kind K, the area's
owner". An area may apply to some matter classes only (``matter_classes``; NULL: all).

Geometry is stored as MultiPolygon in EPSG:4490; areas in m² are geodesic (``geography``).
Areas of one kind should not overlap (two owners for one spot): ``overlaps`` lists those that
do. Every function takes the caller's session and never commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.crs import CHINA_BBOX, CRS, parse_crs, to_cgcs2000
from geo.errors import InvalidInput, NotFound

# kind → Chinese name; the kinds an area may have (a rule's ``inside_area_kind`` names them).
KINDS: Final[dict[str, str]] = {
    "property_compound": "物业管理区域",
    "unit_compound": "单位大院",
    "park": "公园",
    "public_square": "广场",
    "road_contract": "道路养护标段",
    "construction_site": "施工工地",
    "river_bank": "河岸",
    "market": "市场",
    "school": "校园",
    "station": "车站",
}
_KIND_BY_NAME: Final = {name: kind for kind, name in KINDS.items()}
OVERLAP_MIN_M2: Final = 1.0  # below this two areas merely touch (shared edges, rounding slivers)
MAX_NAME = 200
_SEPARATORS = re.compile(r"[\s,，、;；]+")


@dataclass(frozen=True)
class AreaHit:
    """The area of one kind that holds a point: what a dispatch rule needs of it."""

    id: int
    name: str
    kind: str
    owner: str  # unit code
    area_m2: float


@dataclass(frozen=True)
class AreaInput:
    """A new area; ``geometry`` is GeoJSON (or a shapely geometry) in ``crs`` lon/lat."""

    name: str
    kind: str
    owner: str  # unit code
    geometry: Mapping[str, Any] | BaseGeometry
    matter_classes: Sequence[str] | None = None
    crs: CRS | str = CRS.cgcs2000


# --- validation ---------------------------------------------------------------------------------


def parse_geometry(value: Any, crs: CRS | str = CRS.cgcs2000) -> tuple[MultiPolygon | None, str | None]:
    """A valid lon/lat (multi)polygon as EPSG:4490 MultiPolygon, or None and what is wrong."""
    try:
        geom = value if isinstance(value, BaseGeometry) else shape(value)
    except Exception as exc:  # shapely raises several types for malformed GeoJSON
        return None, f"not a GeoJSON geometry: {exc}"
    if not isinstance(geom, Polygon | MultiPolygon):
        return None, f"must be a Polygon or MultiPolygon, not {geom.geom_type}"
    if geom.is_empty:
        return None, "the polygon is empty"
    geom = shapely.force_2d(geom)
    xy = shapely.get_coordinates(geom)
    if not np.isfinite(xy).all():
        return None, "coordinates must be finite numbers"
    if (np.abs(xy[:, 0]) > 180).any() or (np.abs(xy[:, 1]) > 90).any():
        if (np.abs(xy[:, 0]) <= 90).all() and (np.abs(xy[:, 1]) <= 180).all():
            return None, "latitude beyond 90°: longitude first, then latitude"
        return None, "coordinates are not longitude/latitude degrees (EPSG:4490): projected metres?"
    x0, y0, x1, y1 = CHINA_BBOX
    if not ((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)).all():
        return None, "the polygon lies outside China: longitude first, then latitude"
    try:
        crs = parse_crs(crs)
    except InvalidInput as exc:
        return None, exc.detail
    if crs not in (CRS.cgcs2000, CRS.wgs84):  # WGS 84 and CGCS2000 agree to centimetres here

        def convert(points: np.ndarray) -> np.ndarray:
            lon, lat = to_cgcs2000(points[:, 0], points[:, 1], crs)
            return np.column_stack([lon, lat])

        geom = shapely.transform(geom, convert)
    if not geom.is_valid:
        return None, f"invalid polygon: {shapely.is_valid_reason(geom)}"
    return (geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom])), None


def parse_classes(value: Any) -> list[str] | None:
    """Matter classes from a list or a comma-separated string; None (all classes) when empty."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    items = [value] if isinstance(value, str) else list(np.asarray(value, dtype=object).ravel())
    codes = [c for item in items if item is not None for c in _SEPARATORS.split(str(item).strip()) if c]
    return sorted(set(codes)) or None


async def _references(session: AsyncSession) -> tuple[dict[str, int], set[str]]:
    units = dict((await session.execute(text("SELECT code, id FROM units"))).all())
    classes = set(await session.scalars(text("SELECT code FROM matter_classes")))
    return units, classes


def _check(
    fields: Mapping[str, Any], units: Mapping[str, int], classes: set[str], where: str = ""
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The row to store from the given fields, and the problems, each naming its field."""
    errors: list[dict[str, str]] = []
    row: dict[str, Any] = {}

    def bad(name: str, message: str) -> None:
        errors.append({"field": f"{where}{name}", "message": message})

    if "name" in fields:
        name = str(fields["name"] or "").strip()
        if not name:
            bad("name", "required")
        elif len(name) > MAX_NAME:
            bad("name", f"longer than {MAX_NAME} characters")
        row["name"] = name
    if "kind" in fields:
        kind = str(fields["kind"] or "").strip()
        kind = _KIND_BY_NAME.get(kind, kind)
        if kind not in KINDS:
            bad("kind", f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
        row["kind"] = kind
    if "owner" in fields:
        owner = str(fields["owner"] or "").strip()
        if owner not in units:
            bad("owner", f"unknown unit {owner!r}" if owner else "required: the owner unit's code")
        row["owner_id"] = units.get(owner)
    if "matter_classes" in fields:
        raw = fields["matter_classes"]
        if isinstance(raw, list | tuple) and not raw:
            bad("matter_classes", "empty: leave it out (null) for all classes")
        codes = parse_classes(raw)
        unknown = [c for c in codes or () if c not in classes]
        if unknown:
            bad("matter_classes", f"unknown matter classes: {', '.join(unknown)}")
        row["classes"] = codes
    if "geometry" in fields:
        geom, problem = parse_geometry(fields["geometry"], fields.get("crs") or CRS.cgcs2000)
        if problem:
            bad("geometry", problem)
        row["geom"] = shapely.to_wkb(geom) if geom is not None else None
    return row, errors


def _refuse(errors: list[dict[str, str]], what: str = "the responsibility area is not valid") -> None:
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidInput(f"{what}: {detail}", errors=errors)


# --- reading ------------------------------------------------------------------------------------

_COLUMNS = """
    a.id, a.name, a.kind, u.code AS owner, u.name AS owner_name, a.matter_classes, a.generated,
    a.created_at, ST_Area(a.geom::geography) AS area_m2
"""
_FROM = "FROM responsibility_areas a JOIN units u ON u.id = a.owner_unit_id"


def _area(row: Any, geometry: bool = True) -> dict[str, Any]:
    out = {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "kind_name": KINDS.get(row.kind, row.kind),
        "owner": {"code": row.owner, "name": row.owner_name},
        "matter_classes": row.matter_classes,
        "generated": row.generated,
        "created_at": row.created_at,
        "area_m2": round(row.area_m2, 1),
    }
    if geometry:
        out["geometry"] = json.loads(row.geometry)
    return out


def as_feature_collection(areas: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Areas (with geometry) as an RFC 7946 FeatureCollection; the owner flattened for styling."""
    features = []
    for a in areas:
        props = {k: v for k, v in a.items() if k not in ("id", "geometry", "owner")}
        props.update(owner=a["owner"]["code"], owner_name=a["owner"]["name"])
        if props.get("created_at") is not None:
            props["created_at"] = props["created_at"].isoformat()
        features.append({"type": "Feature", "id": a["id"], "geometry": a["geometry"], "properties": props})
    return {"type": "FeatureCollection", "features": features}


async def get(session: AsyncSession, area_id: int) -> dict[str, Any]:
    row = (
        await session.execute(
            text(f"SELECT {_COLUMNS}, ST_AsGeoJSON(a.geom, 7) AS geometry {_FROM} WHERE a.id = :id"),
            {"id": area_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"no responsibility area {area_id}")
    return _area(row)


@dataclass(frozen=True)
class AreaQuery:
    kind: str | None = None
    owner: str | None = None  # unit code
    bbox: tuple[float, float, float, float] | None = None  # lon/lat, EPSG:4490
    limit: int = 500
    offset: int = 0


async def list_areas(session: AsyncSession, q: AreaQuery = AreaQuery()) -> list[dict[str, Any]]:
    """Areas by kind, owner and bounding box, with their geometry; by kind, then name."""
    where = ["true"]
    params: dict[str, Any] = {"limit": q.limit, "offset": q.offset}
    if q.kind:
        where.append("a.kind = :kind")
        params["kind"] = q.kind
    if q.owner:
        where.append("u.code = :owner")
        params["owner"] = q.owner
    if q.bbox:
        where.append("ST_Intersects(a.geom, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490))")
        params.update(zip(("x0", "y0", "x1", "y1"), q.bbox, strict=True))
    rows = await session.execute(
        text(
            f"SELECT {_COLUMNS}, ST_AsGeoJSON(a.geom, 7) AS geometry {_FROM} WHERE {' AND '.join(where)} "
            "ORDER BY a.kind, a.name, a.id LIMIT :limit OFFSET :offset"
        ),
        params,
    )
    return [_area(r) for r in rows]


# --- writing ------------------------------------------------------------------------------------

_INSERT = text("""
INSERT INTO responsibility_areas (name, kind, owner_unit_id, matter_classes, generated, geom)
VALUES (:name, :kind, :owner_id, :classes, :generated, ST_Multi(ST_GeomFromWKB(:geom, 4490)))
RETURNING id
""")


def _fields(data: AreaInput) -> dict[str, Any]:
    return {
        "name": data.name,
        "kind": data.kind,
        "owner": data.owner,
        "matter_classes": data.matter_classes,
        "geometry": data.geometry,
        "crs": data.crs,
    }


async def create(session: AsyncSession, data: AreaInput, generated: bool = False) -> dict[str, Any]:
    """Store a new area after checking it (422 naming every bad field); the area as stored."""
    units, classes = await _references(session)
    row, errors = _check(_fields(data), units, classes)
    _refuse(errors)
    area_id = await session.scalar(_INSERT, {**row, "generated": generated})
    return await get(session, area_id)


_EDITABLE = ("name", "kind", "owner", "matter_classes", "geometry")


async def update(session: AsyncSession, area_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change the given fields of an area (``matter_classes: None`` → all classes).

    An edited generated area becomes the administrator's (``generated`` false), so the demo
    loader will not replace it.
    """
    unknown = [k for k in changes if k not in (*_EDITABLE, "crs")]
    _refuse([{"field": k, "message": "not an editable field"} for k in unknown])
    if not await session.scalar(
        text("SELECT 1 FROM responsibility_areas WHERE id = :id FOR UPDATE"), {"id": area_id}
    ):
        raise NotFound(f"no responsibility area {area_id}")
    units, classes = await _references(session)
    row, errors = _check(changes, units, classes)
    _refuse(errors)
    columns = {
        "name": "name = :name",
        "kind": "kind = :kind",
        "owner_id": "owner_unit_id = :owner_id",
        "classes": "matter_classes = :classes",
        "geom": "geom = ST_Multi(ST_GeomFromWKB(:geom, 4490))",
    }
    sets = [columns[k] for k in row] + ["generated = false"]
    await session.execute(
        text(f"UPDATE responsibility_areas SET {', '.join(sets)} WHERE id = :id"), {**row, "id": area_id}
    )
    return await get(session, area_id)


async def delete(session: AsyncSession, area_id: int) -> None:
    deleted = await session.scalar(
        text("DELETE FROM responsibility_areas WHERE id = :id RETURNING id"), {"id": area_id}
    )
    if deleted is None:
        raise NotFound(f"no responsibility area {area_id}")


def read_file(path: Path, label: str | None = None) -> list[dict[str, Any]]:
    """The features of a GeoJSON or GeoPackage file as area fields, reprojected to EPSG:4490.

    Properties: ``name``, ``kind`` (code or Chinese name), ``owner`` (unit code),
    ``matter_classes`` (a list or a comma-separated string; empty: all classes). A file
    without a CRS is taken as lon/lat (RFC 7946).
    """
    import geopandas as gpd
    import pandas as pd

    label = label or path.name
    try:
        gdf = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several unrelated types for unreadable files
        raise InvalidInput(
            f"cannot read {label}: {exc}", errors=[{"field": "file", "message": str(exc)}]
        ) from exc
    missing = [c for c in ("name", "kind", "owner") if c not in gdf.columns]
    if missing:
        raise InvalidInput(
            f"{label} lacks the properties {', '.join(missing)}",
            errors=[{"field": "file", "message": f"missing properties: {', '.join(missing)}"}],
        )
    if gdf.crs is not None and gdf.crs.to_epsg() not in (4326, 4490):
        gdf = gdf.to_crs(4490)

    def plain(value: Any) -> Any:
        if value is None or (not isinstance(value, list | tuple | np.ndarray) and pd.isna(value)):
            return None
        return value

    rows = []
    for record in gdf.to_dict("records"):
        rows.append(
            {
                "name": plain(record.get("name")),
                "kind": plain(record.get("kind")),
                "owner": plain(record.get("owner")),
                "matter_classes": plain(record.get("matter_classes")),
                # None stays None: the check then names the row's geometry as missing
                "geometry": record.get(gdf.geometry.name),
            }
        )
    return rows


async def import_file(session: AsyncSession, path: Path, label: str | None = None) -> int:
    """Add every area of a GeoJSON/GeoPackage file, all or nothing; how many.

    Every bad row is named (``[i].field``, rows counted from 0); one bad row refuses the file.
    ``label`` names the file in messages (default: its name).
    """
    label = label or path.name
    rows = read_file(path, label)
    units, classes = await _references(session)
    stored: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for i, fields in enumerate(rows):
        if fields["geometry"] is None:
            errors.append({"field": f"[{i}].geometry", "message": "missing"})
            continue
        row, problems = _check(fields, units, classes, where=f"[{i}].")
        errors += problems
        stored.append({**row, "generated": False})
    if errors:
        first = errors[0]
        raise InvalidInput(
            f"{len({e['field'].split('.')[0] for e in errors})} of {len(rows)} rows of {label} are "
            f"invalid, nothing was imported (first: row {first['field']}: {first['message']})",
            errors=errors,
        )
    if stored:
        await session.execute(_INSERT, stored)
    return len(stored)


# --- questions ----------------------------------------------------------------------------------

_OVERLAPS = text("""
SELECT a.kind, a.id AS a_id, a.name AS a_name, ua.code AS a_owner, b.id AS b_id, b.name AS b_name,
       ub.code AS b_owner, ST_Area(i.g::geography) AS m2, ST_AsGeoJSON(i.g, 7) AS geometry
FROM responsibility_areas a
JOIN responsibility_areas b
  ON b.kind = a.kind AND b.id > a.id AND ST_Intersects(a.geom, b.geom)
  -- two areas for disjoint classes never compete for a case
 AND (a.matter_classes IS NULL OR b.matter_classes IS NULL OR a.matter_classes && b.matter_classes)
JOIN units ua ON ua.id = a.owner_unit_id
JOIN units ub ON ub.id = b.owner_unit_id
CROSS JOIN LATERAL (SELECT ST_CollectionExtract(ST_Intersection(a.geom, b.geom), 3) AS g) i
WHERE (CAST(:kind AS text) IS NULL OR a.kind = :kind) AND ST_Area(i.g::geography) > :min_m2
ORDER BY a.kind, a.id, b.id
""")


async def overlaps(session: AsyncSession, kind: str | None = None) -> list[dict[str, Any]]:
    """Pairs of areas of one kind (and of classes in common) overlapping by more than 1 m²."""
    rows = await session.execute(_OVERLAPS, {"kind": kind, "min_m2": OVERLAP_MIN_M2})
    return [
        {
            "kind": r.kind,
            "kind_name": KINDS.get(r.kind, r.kind),
            "a": {"id": r.a_id, "name": r.a_name, "owner": r.a_owner},
            "b": {"id": r.b_id, "name": r.b_name, "owner": r.b_owner},
            "overlap_m2": round(r.m2, 1),
            "geometry": json.loads(r.geometry),
        }
        for r in rows
    ]


_AT = f"""
SELECT {_COLUMNS}
{_FROM}
WHERE ST_Intersects(a.geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4490))
  AND (CAST(:kind AS text) IS NULL OR a.kind = :kind)
  AND (CAST(:kinds AS text[]) IS NULL OR a.kind = ANY(:kinds))
  AND (CAST(:category AS text) IS NULL OR a.matter_classes IS NULL OR :category = ANY(a.matter_classes))
ORDER BY area_m2, a.id
"""


async def areas_at(
    session: AsyncSession,
    lon: float,
    lat: float,
    kind: str | None = None,
    category: str | None = None,
) -> list[dict[str, Any]]:
    """The areas holding a CGCS2000 point, smallest (most specific) first.

    With ``category``, only the areas that apply to that matter class (NULL classes: all).
    """
    rows = await session.execute(
        text(_AT), {"lon": lon, "lat": lat, "kind": kind, "kinds": None, "category": category}
    )
    return [_area(r, geometry=False) for r in rows]


async def owners_at(
    session: AsyncSession, lon: float, lat: float, kinds: Iterable[str], category: str | None
) -> dict[str, AreaHit]:
    """For each of ``kinds``, the smallest area holding the point that applies to ``category``."""
    wanted = sorted(set(kinds))
    if not wanted:
        return {}
    rows = await session.execute(
        text(_AT), {"lon": lon, "lat": lat, "kind": None, "kinds": wanted, "category": category}
    )
    hits: dict[str, AreaHit] = {}
    for r in rows:  # smallest first: keep the first of each kind
        hits.setdefault(r.kind, AreaHit(r.id, r.name, r.kind, r.owner, round(r.area_m2, 1)))
    return hits
