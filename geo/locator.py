"""The point locator: where a point is (management area, county, street, community, unit grid).

One database round trip per point, on the raw asyncpg connection with a prepared statement.
A point inside a grid gets that grid; exactly on a shared edge, the grid with the smallest
code (deterministic); outside every grid but within ``SNAP_M`` metres, the nearest grid with
the distance; farther, ``OutsideJurisdiction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from geo.crs import CRS, to_cgcs2000
from geo.errors import OutsideJurisdiction
from geo.grid_index import GridIndex
from geo.pg import raw_connection

SNAP_M = 50.0
_NEAREST_CANDIDATES = 4  # KNN in degrees is not metric: rank a few by true distance

_HIERARCHY = """
    SELECT hit.code, hit.dist, g.community_code, c.name AS community_name,
           s.code AS street_code, s.name AS street_name, k.code AS county_code, k.name AS county_name,
           g.area_code, a.name AS area_name
    FROM hit
    JOIN unit_grids g ON g.code = hit.code
    JOIN regions c ON c.code = g.community_code
    JOIN regions s ON s.code = c.parent_code
    JOIN regions k ON k.code = s.parent_code
    JOIN management_areas a ON a.code = g.area_code
"""

LOCATE_SQL = f"""
WITH p AS (SELECT ST_SetSRID(ST_MakePoint($1, $2), 4490) AS g),
hit AS (
    (SELECT u.code, 0.0::float8 AS dist FROM unit_grids u, p
      WHERE ST_Intersects(u.geom, p.g) ORDER BY u.code LIMIT 1)
    UNION ALL
    (SELECT n.code, n.dist FROM (
        SELECT u.code, ST_Distance(u.geom::geography, p.g::geography) AS dist
          FROM unit_grids u, p ORDER BY u.geom <-> p.g LIMIT {_NEAREST_CANDIDATES}) n
      ORDER BY n.dist, n.code LIMIT 1)
    LIMIT 1
)
{_HIERARCHY}
"""

# Bulk: the grids drive a LATERAL join into the GiST-indexed points, the fast plan for many
# points. ST_Contains leaves out points on a grid edge, so each point found has exactly one
# grid and no sort is needed; edge points and points outside all grids (few) take the
# single-point rules.
_BULK_INSIDE = """
INSERT INTO {dest} (id, grid_code, dist)
SELECT p.id, u.code, 0.0 FROM unit_grids u
CROSS JOIN LATERAL (SELECT s.id FROM {src} s WHERE ST_Contains(u.geom, s.{geom})) p
"""
_BULK_REST = """
INSERT INTO {dest} (id, grid_code, dist)
SELECT s.id, n.code, n.dist FROM {src} s
CROSS JOIN LATERAL (
    (SELECT u.code, 0.0::float8 AS dist FROM unit_grids u
      WHERE ST_Intersects(u.geom, s.{geom}) ORDER BY u.code LIMIT 1)
    UNION ALL
    (SELECT c.code, c.dist FROM (
        SELECT u.code, ST_Distance(u.geom::geography, s.{geom}::geography) AS dist
          FROM unit_grids u ORDER BY u.geom <-> s.{geom} LIMIT {k}) c
      ORDER BY c.dist, c.code LIMIT 1)
    LIMIT 1) n
WHERE NOT EXISTS (SELECT 1 FROM {dest} d WHERE d.id = s.id) AND n.dist <= {snap}
"""


async def locate_table(conn: asyncpg.Connection, src: str, dest: str, geom: str = "geom") -> None:
    """Locate every row of table ``src`` (``id``, CGCS2000 point ``geom``, GiST-indexed) into
    ``dest`` (``id``, ``grid_code``, ``dist``); rows farther than SNAP_M from every grid are
    left out. Table names come from code, never from user input.
    """
    await conn.execute(_BULK_INSIDE.format(src=src, dest=dest, geom=geom))
    await conn.execute(_BULK_REST.format(src=src, dest=dest, geom=geom, k=_NEAREST_CANDIDATES, snap=SNAP_M))


_NAMES = """
SELECT g.code, g.community_code, c.name AS community_name, s.code AS street_code,
       s.name AS street_name, k.code AS county_code, k.name AS county_name,
       g.area_code, a.name AS area_name
FROM unit_grids g
JOIN regions c ON c.code = g.community_code
JOIN regions s ON s.code = c.parent_code
JOIN regions k ON k.code = s.parent_code
JOIN management_areas a ON a.code = g.area_code
WHERE g.code = ANY($1::text[])
"""


@dataclass(frozen=True)
class Location:
    """Where a point lies; ``snapped_m`` is set when it lay outside every grid."""

    lon: float
    lat: float
    grid: str
    community: tuple[str, str]
    street: tuple[str, str]
    county: tuple[str, str]
    area: tuple[str, str]
    snapped_m: float | None

    def as_dict(self) -> dict[str, Any]:
        """The shape of API.md: the same fields a report carries."""
        return {
            "location": {"lon": self.lon, "lat": self.lat},
            "grid": self.grid,
            "community": {"code": self.community[0], "name": self.community[1]},
            "street": {"code": self.street[0], "name": self.street[1]},
            "county": {"code": self.county[0], "name": self.county[1]},
            "district": self.area[1],
            "area_code": self.area[0],
            "snapped_m": self.snapped_m,
        }


def _location(lon: float, lat: float, row: Any, dist: float) -> Location:
    return Location(
        lon,
        lat,
        row["code"].strip(),
        (row["community_code"], row["community_name"]),
        (row["street_code"], row["street_name"]),
        (row["county_code"], row["county_name"]),
        (row["area_code"], row["area_name"]),
        round(dist, 2) if dist > 0 else None,
    )


def _outside(lon: float, lat: float, dist: float | None) -> OutsideJurisdiction:
    where = f"{dist:.0f} m from the nearest unit grid" if dist is not None else "no unit grid exists"
    return OutsideJurisdiction(
        f"({lon:.6f}, {lat:.6f}) is outside the jurisdiction: {where} (limit {SNAP_M:.0f} m)",
        errors=[{"field": "location", "message": f"more than {SNAP_M:.0f} m from every unit grid"}],
    )


async def locate_cgcs2000(conn: asyncpg.Connection, lon: float, lat: float) -> Location:
    """Locate a CGCS2000 point (one prepared statement, one round trip)."""
    row = await conn.fetchrow(LOCATE_SQL, lon, lat)
    if row is None or row["dist"] > SNAP_M:
        raise _outside(lon, lat, row["dist"] if row else None)
    return _location(lon, lat, row, row["dist"])


async def locate(
    session: AsyncSession, lon: float, lat: float, crs: CRS | str = CRS.wgs84, index: GridIndex | None = None
) -> Location:
    """Locate a point given in any of the four coordinate systems.

    With an in-process ``index`` (in sync with the table), points well inside a grid are
    answered from memory; the database answers the rest with the same rules.
    """
    x, y = to_cgcs2000(lon, lat, crs)
    if index is not None:
        hit = index.lookup(x, y)
        if hit is not None:
            return _location(x, y, hit.row, 0.0)
    return await locate_cgcs2000(await raw_connection(session), x, y)


async def locate_many(
    session: AsyncSession,
    lons: Sequence[float] | np.ndarray,
    lats: Sequence[float] | np.ndarray,
    crs: CRS | str = CRS.wgs84,
) -> list[Location | None]:
    """Locate many points at once (imports, GPS tracks); None for points outside."""
    xs, ys = to_cgcs2000(np.asarray(lons, dtype=float), np.asarray(lats, dtype=float), crs)
    xs, ys = np.atleast_1d(xs), np.atleast_1d(ys)
    if len(xs) == 0:
        return []
    conn = await raw_connection(session)
    # A transaction (a savepoint inside the caller's) keeps the temp tables for the batch.
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS locate_src (id integer, geom geometry(Point, 4490)) ON COMMIT DROP;"
            "CREATE TEMP TABLE IF NOT EXISTS locate_dest (id integer, grid_code text, dist float8) ON COMMIT DROP;"
            "TRUNCATE locate_src, locate_dest"
        )
        await conn.execute(
            "INSERT INTO locate_src (id, geom) SELECT i - 1, ST_SetSRID(ST_MakePoint(x, y), 4490) "
            "FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY AS t(x, y, i)",
            xs.tolist(),
            ys.tolist(),
        )
        if len(xs) > 1000:  # a GiST index and statistics pay off only for larger batches
            await conn.execute("CREATE INDEX ON locate_src USING gist (geom); ANALYZE locate_src")
        await locate_table(conn, "locate_src", "locate_dest")
        found = {r["id"]: (r["grid_code"], r["dist"]) for r in await conn.fetch("SELECT * FROM locate_dest")}
    names = {r["code"].strip(): r for r in await conn.fetch(_NAMES, list({c for c, _ in found.values()}))}
    return [
        _location(float(xs[i]), float(ys[i]), names[found[i][0]], found[i][1]) if i in found else None
        for i in range(len(xs))
    ]
