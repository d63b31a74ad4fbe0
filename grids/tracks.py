"""GPS tracks of collectors: bulk intake (idempotent per point) and reading back.

A batch is staged in a temporary table on the request's connection, located to unit grids in
one pass by ``geo.locator.locate_table`` and copied into ``track_points`` with
``ON CONFLICT (collector_id, t) DO NOTHING``: the app may resend a batch after a timeout, and
what was stored before (or repeats within the batch) counts as a duplicate. Points farther
than 50 m from every grid are stored too, with no grid: the track is the collector's all the
same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Principal
from geo.crs import to_cgcs2000
from geo.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge
from geo.locator import locate_table
from geo.pg import raw_connection

MAX_POINTS: Final = 10_000
# Who may read any collector's track; a collector reads their own.
READ_ALL: Final = ("operator", "supervisor", "planner")


@dataclass(frozen=True)
class TrackPoint:
    """One GPS fix as the app sends it; ``t`` carries an offset."""

    t: datetime
    lon: float
    lat: float
    crs: str = "wgs84"
    accuracy_m: float | None = None


# Per connection, kept across requests; ON COMMIT DELETE ROWS empties them at every commit, so a
# batch needs no DDL of its own (no catalogue churn for a call every minute from every device).
# The primary keys serve locate_table's anti-join and the final join.
_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS track_stage (
    id integer PRIMARY KEY, t timestamptz NOT NULL, accuracy_m real, geom geometry(Point, 4490) NOT NULL
) ON COMMIT DELETE ROWS;
CREATE INDEX IF NOT EXISTS track_stage_geom ON track_stage USING gist (geom);
CREATE TEMP TABLE IF NOT EXISTS track_located (
    id integer PRIMARY KEY, grid_code text, dist float8
) ON COMMIT DELETE ROWS;
DELETE FROM track_stage; DELETE FROM track_located
"""

_STAGE = """
INSERT INTO track_stage (id, t, accuracy_m, geom)
SELECT i, t, a, ST_SetSRID(ST_MakePoint(x, y), 4490)
FROM unnest($1::float8[], $2::float8[], $3::timestamptz[], $4::real[]) WITH ORDINALITY AS p(x, y, t, a, i)
"""

# DISTINCT ON keeps the first of points repeated within the batch; the conflict clause skips
# those stored before. The status tag's row count is then the number accepted.
_STORE = """
INSERT INTO track_points (collector_id, t, accuracy_m, grid_code, geom)
SELECT DISTINCT ON (s.t) $1::integer, s.t, s.accuracy_m, d.grid_code, s.geom
FROM track_stage s LEFT JOIN track_located d ON d.id = s.id
ORDER BY s.t, s.id
ON CONFLICT (collector_id, t) DO NOTHING
"""


def _to_cgcs2000(points: Sequence[TrackPoint]) -> tuple[np.ndarray, np.ndarray]:
    """All points in CGCS2000, converted in one vectorised call per coordinate system."""
    xs = np.array([p.lon for p in points], dtype=float)
    ys = np.array([p.lat for p in points], dtype=float)
    systems = np.array([str(p.crs) for p in points])
    for system in np.unique(systems):
        mask = systems == system
        xs[mask], ys[mask] = to_cgcs2000(xs[mask], ys[mask], str(system))
    return xs, ys


async def record(session: AsyncSession, collector_id: int, points: Sequence[TrackPoint]) -> tuple[int, int]:
    """Store a batch of a collector's track; (accepted, duplicates). No commit."""
    if not points:
        raise InvalidInput("send at least one point", errors=[{"field": "points", "message": "empty"}])
    if len(points) > MAX_POINTS:
        raise PayloadTooLarge(
            f"at most {MAX_POINTS} points a call, {len(points)} sent",
            errors=[{"field": "points", "message": f"at most {MAX_POINTS}"}],
        )
    xs, ys = _to_cgcs2000(points)
    # SQLAlchemy sends BEGIN lazily, with its first statement: without one, the raw statements
    # below would each autocommit (and ON COMMIT DELETE ROWS empty the staging between them).
    await session.execute(text("SELECT 1"))
    conn = await raw_connection(session)
    await conn.execute(_STAGING)
    await conn.execute(
        _STAGE, xs.tolist(), ys.tolist(), [p.t for p in points], [p.accuracy_m for p in points]
    )
    await conn.execute("ANALYZE track_stage")  # fresh statistics: the planner then uses the GiST index
    await locate_table(conn, "track_stage", "track_located")
    status = await conn.execute(_STORE, collector_id)  # "INSERT 0 <rows>"
    accepted = int(status.rsplit(" ", 1)[-1])
    return accepted, len(points) - accepted


async def readable_collector(session: AsyncSession, viewer: Principal, username: str | None) -> int:
    """The id of the collector whose track ``viewer`` asks for (``None``: their own).

    403 for a collector asking for another's; 404 for a username that is no collector.
    """
    if username is None or (viewer.has("collector") and username == viewer.username):
        if not viewer.has("collector"):
            raise InvalidInput("name the collector", errors=[{"field": "collector", "message": "required"}])
        return viewer.id
    if not viewer.has(*READ_ALL):
        raise Forbidden("a collector may read only their own track")
    found = await session.scalar(
        text("SELECT id FROM users WHERE username = :n AND 'collector' = ANY(roles)"), {"n": username}
    )
    if found is None:
        raise NotFound(f"no collector {username}")
    return found


async def read(
    session: AsyncSession,
    collector_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = MAX_POINTS,
) -> list[dict[str, Any]]:
    """A collector's points with ``since <= t < until``, in time order (at most ``limit``)."""
    if since is not None and until is not None and until < since:
        raise InvalidInput("to is before from", errors=[{"field": "to", "message": "before from"}])
    rows = await session.execute(
        text(
            "SELECT t, ST_X(geom) AS lon, ST_Y(geom) AS lat, accuracy_m, grid_code FROM track_points "
            "WHERE collector_id = :u AND (CAST(:since AS timestamptz) IS NULL OR t >= :since) "
            "AND (CAST(:until AS timestamptz) IS NULL OR t < :until) ORDER BY t LIMIT :limit"
        ),
        {"u": collector_id, "since": since, "until": until, "limit": limit},
    )
    return [
        {
            "t": r["t"].isoformat(),
            "lon": r["lon"],
            "lat": r["lat"],
            "accuracy_m": r["accuracy_m"],
            "grid": r["grid_code"],
        }
        for r in rows.mappings()
    ]
