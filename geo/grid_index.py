"""An in-process index of the unit grids, kept in sync with the table.

Point-in-grid lookups are the hottest geographic query (every report, every GPS point); the
index in memory answers them more than ten times faster than a database round trip
(bench/locator.py). The index knows the database's geography revision (bumped by a trigger on
every change of grids, regions or areas, and announced by NOTIFY ``citygrid_geo``); a keeper
reloads it when told. Anything the index cannot answer exactly — points on or near edges,
points outside every grid — goes to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from dataclasses import dataclass

import asyncpg
import numpy as np
import shapely

from geo.pg import Listener

log = logging.getLogger("citygrid.geo")

CHANNEL = "citygrid_geo"
# Closer than this (degrees, ~1 cm) to a grid edge, a point is left to the database's rules.
EDGE_MARGIN_DEG = 1e-7

_LOAD = """
SELECT g.code, ST_AsBinary(g.geom) AS wkb, g.community_code, c.name AS community_name,
       s.code AS street_code, s.name AS street_name, k.code AS county_code, k.name AS county_name,
       g.area_code, a.name AS area_name
FROM unit_grids g
JOIN regions c ON c.code = g.community_code
JOIN regions s ON s.code = c.parent_code
JOIN regions k ON k.code = s.parent_code
JOIN management_areas a ON a.code = g.area_code
ORDER BY g.code
"""


@dataclass(frozen=True)
class GridHit:
    code: str
    row: dict[str, str]


Ring = list[tuple[float, float]]  # closed: the last point repeats the first


def _near_edge(rings: list[Ring], x: float, y: float, margin: float) -> bool:
    """Whether the point is within ``margin`` (degrees, planar) of a ring's segment."""
    limit = margin * margin
    for ring in rings:
        ax, ay = ring[0]
        for bx, by in ring[1:]:
            dx, dy = bx - ax, by - ay
            length = dx * dx + dy * dy
            t = 0.0 if length == 0 else max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / length))
            ex, ey = ax + t * dx - x, ay + t * dy - y
            if ex * ex + ey * ey < limit:
                return True
            ax, ay = bx, by
    return False


def _inside(rings: list[Ring], x: float, y: float) -> bool:
    """Even-odd rule over every ring (shells and holes of every part) for a point off the edges."""
    inside = False
    for ring in rings:
        ax, ay = ring[0]
        for bx, by in ring[1:]:
            if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
                inside = not inside
            ax, ay = bx, by
    return inside


class GridIndex:
    """The grids at one geography revision, bucketed by a regular lattice of cells.

    Lookups are plain Python on purpose: every call into shapely or GEOS releases the GIL,
    and on the event loop, with photo checks running in worker threads, getting it back cost
    more than a millisecond a lookup under load (measured), against ~10 µs of work.
    """

    def __init__(self, revision: int, codes: list[str], geoms: np.ndarray, rows: list[dict[str, str]]):
        self.revision = revision
        self.codes = codes
        self.rows = rows
        parts, owner = shapely.get_parts(geoms, return_index=True)
        rings, part = shapely.get_rings(parts, return_index=True)
        coords, ring = shapely.get_coordinates(rings, return_index=True)
        self._rings: list[list[Ring]] = [[] for _ in codes]
        starts = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
        for start, end in zip(starts, [*starts[1:], len(ring)], strict=True):
            grid = int(owner[part[ring[start]]])
            self._rings[grid].append([(float(x), float(y)) for x, y in coords[start:end]])
        bounds = shapely.bounds(geoms)
        self._bounds = [tuple(map(float, b)) for b in bounds]
        # About two grids across a cell: few candidates a lookup, few cells a grid.
        extent = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
        self._cell = max(float(np.median(extent)) * 2 if len(codes) else 1.0, 1e-6)
        cells: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (x0, y0, x1, y1) in enumerate(self._bounds):
            for cx in range(self._key(x0 - EDGE_MARGIN_DEG), self._key(x1 + EDGE_MARGIN_DEG) + 1):
                for cy in range(self._key(y0 - EDGE_MARGIN_DEG), self._key(y1 + EDGE_MARGIN_DEG) + 1):
                    cells[cx, cy].append(i)
        self._cells = dict(cells)

    def _key(self, value: float) -> int:
        return math.floor(value / self._cell)

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> GridIndex:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            revision = await conn.fetchval("SELECT n FROM geo_revision")
            records = await conn.fetch(_LOAD)
        geoms = shapely.from_wkb([r["wkb"] for r in records])
        rows = [{k: v for k, v in r.items() if k != "wkb"} for r in records]
        return cls(revision, [r["code"].strip() for r in records], geoms, rows)

    def lookup(self, lon: float, lat: float) -> GridHit | None:
        """The grid strictly containing the point, away from every edge; None otherwise."""
        found = None
        for i in self._cells.get((self._key(lon), self._key(lat)), ()):
            x0, y0, x1, y1 = self._bounds[i]
            if not (
                x0 - EDGE_MARGIN_DEG <= lon <= x1 + EDGE_MARGIN_DEG
                and y0 - EDGE_MARGIN_DEG <= lat <= y1 + EDGE_MARGIN_DEG
            ):
                continue
            if _near_edge(self._rings[i], lon, lat, EDGE_MARGIN_DEG):
                return None  # on or next to an edge: the database's rules decide
            if _inside(self._rings[i], lon, lat):
                if found is not None:
                    return None  # overlapping grids: likewise
                found = i
        return None if found is None else GridHit(self.codes[found], self.rows[found])

    def __len__(self) -> int:
        return len(self.codes)


class GridIndexKeeper:
    """Holds the current index for one database and reloads it when the geography changes.

    The process's ``Listener`` tells it: a notification on ``citygrid_geo``, or a (re)made
    connection, after which changes may have been missed. While the listener is down, or a
    reload is under way, ``current()`` is None and the locator asks the database.
    """

    def __init__(self, dsn: str, listener: Listener) -> None:
        self.dsn = dsn
        self.listener = listener
        self.index: GridIndex | None = None
        self._stale = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        listener.on(CHANNEL, lambda _: self._stale.set())
        listener.on_reset(self._stale.set)

    def current(self) -> GridIndex | None:
        """The index, or None while it cannot be trusted: callers then use the database."""
        return None if self._stale.is_set() or not self.listener.live else self.index

    async def start(self) -> None:
        """Load the index (after the listener started), then follow the changes."""
        await self._reload()
        self._task = asyncio.create_task(self._run(), name="grid-index-keeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _reload(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            self._stale.clear()  # changes from now on mark the new index stale again
            index = await GridIndex.load(conn)
        finally:
            await conn.close()
        self.index = index
        log.info("grid index loaded: %d grids at revision %d", len(index), index.revision)

    async def _run(self) -> None:
        while True:
            await self._stale.wait()
            try:
                await self._reload()
            except (OSError, asyncpg.PostgresError):
                log.exception("grid index reload failed; the locator uses the database meanwhile")
                self._stale.set()
                await asyncio.sleep(1.0)
