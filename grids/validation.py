"""The grid validation report: is the grid system whole (全覆盖、无遗漏) and well formed?

Checks, inside each management area: invalid geometries, overlaps and gaps above a
tolerance, grids crossing their community's boundary, area outliers against the ~10,000 m²
norm, malformed or duplicate codes, and grids without a collector. Every problem carries its
geometry, so the report opens as GeoJSON in QGIS.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from grids.codes import InvalidCode, parse_grid

NORM_M2 = 10_000.0


@dataclass(frozen=True)
class Tolerances:
    gap_m2: float = 1.0  # gaps and overlaps smaller than this are floating-point slivers
    overlap_m2: float = 1.0
    crossing_m2: float = 1.0
    min_area_m2: float = NORM_M2 / 4
    max_area_m2: float = NORM_M2 * 4


@dataclass
class Problem:
    kind: str
    detail: str
    grids: list[str] = field(default_factory=list)
    area_code: str | None = None
    area_m2: float | None = None
    geometry: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "detail": self.detail,
            "grids": self.grids,
            "area": self.area_code,
            "area_m2": None if self.area_m2 is None else round(self.area_m2, 2),
            "geometry": self.geometry,
        }


KINDS = (
    "invalid_geometry",
    "overlap",
    "gap",
    "crosses_community",
    "area_outlier",
    "malformed_code",
    "duplicate_code",
    "no_collector",
)

_M2 = "ST_Area(ST_Transform({g}, 4546))"


def _m2(geom: str) -> str:
    return _M2.format(g=geom)


_INVALID = """
SELECT code, area_code, ST_IsValidReason(geom) AS reason, ST_AsGeoJSON(geom, 7) AS gj
FROM unit_grids WHERE NOT ST_IsValid(geom) OR ST_GeometryType(geom) <> 'ST_Polygon'
"""
_OVERLAPS = f"""
SELECT a.code AS a, b.code AS b, a.area_code, {_m2("ST_Intersection(a.geom, b.geom)")} AS m2,
       ST_AsGeoJSON(ST_Intersection(a.geom, b.geom), 7) AS gj
FROM unit_grids a JOIN unit_grids b
  ON a.code < b.code AND a.area_code = b.area_code AND a.geom && b.geom
 AND ST_Relate(a.geom, b.geom, '2********')
WHERE ST_IsValid(a.geom) AND ST_IsValid(b.geom)
"""
_GAPS = f"""
WITH u AS (
    SELECT a.code AS area_code, a.geom AS area, ST_Union(g.geom) AS grids
    FROM management_areas a JOIN unit_grids g ON g.area_code = a.code AND ST_IsValid(g.geom)
    GROUP BY a.code, a.geom
), holes AS (
    SELECT area_code, (ST_Dump(ST_Difference(area, grids))).geom AS g FROM u
    UNION ALL
    SELECT area_code, ST_MakePolygon(ST_InteriorRingN(d.geom, n))
    FROM u, ST_Dump(u.grids) d, generate_series(1, ST_NumInteriorRings(d.geom)) n
)
SELECT area_code, {_m2("g")} AS m2, ST_AsGeoJSON(g, 7) AS gj FROM holes
"""
_CROSSING = f"""
SELECT g.code, g.area_code, {_m2("ST_Difference(g.geom, c.geom)")} AS m2,
       ST_AsGeoJSON(ST_Difference(g.geom, c.geom), 7) AS gj
FROM unit_grids g LEFT JOIN regions c ON c.code = g.community_code
WHERE c.code IS NULL OR NOT ST_CoveredBy(g.geom, c.geom)
"""
_SIZES = f"""
SELECT code, area_code, {_m2("geom")} AS m2, ST_AsGeoJSON(geom, 7) AS gj FROM unit_grids
"""
_NO_COLLECTOR = """
SELECT g.code, g.area_code, ST_AsGeoJSON(g.geom, 7) AS gj FROM unit_grids g
WHERE NOT EXISTS (SELECT 1 FROM beats b WHERE b.grid_code = g.code)
"""


async def validate(
    session: AsyncSession, tol: Tolerances | None = None, table: str = "unit_grids"
) -> dict[str, Any]:
    """The report as JSON: a summary per kind and the list of problems.

    ``table``: the grids to check, by default the stored ones; grids.files passes the temporary
    table of an import's result (``pg_temp.unit_grids``) for its dry run.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?", table):
        raise ValueError(f"not a table name: {table!r}")
    tol = tol or Tolerances()
    problems: list[Problem] = []

    def geo(gj: str | None) -> dict[str, Any] | None:
        return json.loads(gj) if gj else None

    async def rows(sql: str) -> list[Any]:
        return list((await session.execute(text(sql.replace("unit_grids", table)))).all())

    for r in await rows(_INVALID):
        problems.append(Problem("invalid_geometry", r.reason, [r.code.strip()], r.area_code, None, geo(r.gj)))
    for r in await rows(_OVERLAPS):
        if r.m2 > tol.overlap_m2:
            problems.append(
                Problem(
                    "overlap",
                    f"{r.a.strip()} and {r.b.strip()} overlap by {r.m2:.1f} m²",
                    [r.a.strip(), r.b.strip()],
                    r.area_code,
                    r.m2,
                    geo(r.gj),
                )
            )
    for r in await rows(_GAPS):
        if r.m2 > tol.gap_m2:
            problems.append(
                Problem(
                    "gap", f"{r.m2:.1f} m² of {r.area_code} lie in no grid", [], r.area_code, r.m2, geo(r.gj)
                )
            )
    for r in await rows(_CROSSING):
        if r.m2 is None or r.m2 > tol.crossing_m2:
            detail = (
                f"{r.m2:.1f} m² of the grid lie outside its community"
                if r.m2 is not None
                else "its community does not exist"
            )
            problems.append(
                Problem("crosses_community", detail, [r.code.strip()], r.area_code, r.m2, geo(r.gj))
            )
    codes: Counter[str] = Counter()
    for r in await rows(_SIZES):
        code = r.code.strip()
        codes[code] += 1
        if not tol.min_area_m2 <= r.m2 <= tol.max_area_m2:
            problems.append(
                Problem(
                    "area_outlier",
                    f"{r.m2:,.0f} m² against a norm of {NORM_M2:,.0f} m² "
                    f"(accepted {tol.min_area_m2:,.0f}–{tol.max_area_m2:,.0f})",
                    [code],
                    r.area_code,
                    r.m2,
                    geo(r.gj),
                )
            )
        try:
            parsed = parse_grid(code)
            if parsed.legacy:
                raise InvalidCode(code, "legacy 14-digit code")
        except InvalidCode as exc:
            problems.append(Problem("malformed_code", exc.reason, [code], r.area_code, None, geo(r.gj)))
    for code, n in codes.items():
        if n > 1:
            problems.append(Problem("duplicate_code", f"{code} is used by {n} grids", [code]))
    for r in await rows(_NO_COLLECTOR):
        problems.append(
            Problem(
                "no_collector",
                "no collector patrols this grid",
                [r.code.strip()],
                r.area_code,
                None,
                geo(r.gj),
            )
        )
    summary = {kind: sum(1 for p in problems if p.kind == kind) for kind in KINDS}
    return {
        "valid": not problems,
        "grids": sum(codes.values()),
        "tolerances": tol.__dict__,
        "summary": summary,
        "problems": [p.as_dict() for p in problems],
    }


def as_geojson(report: dict[str, Any]) -> dict[str, Any]:
    """The report's problems as a GeoJSON FeatureCollection (RFC 7946, lon/lat)."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": p["geometry"],
                "properties": {
                    k: (", ".join(v) if isinstance(v, list) else v) for k, v in p.items() if k != "geometry"
                },
            }
            for p in report["problems"]
        ],
    }
