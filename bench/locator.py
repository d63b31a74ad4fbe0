"""Benchmark of the point locator (issue: Geo core). Run: ``.venv/bin/python -m bench.locator``.

Single lookups: the project's locator against a raw prepared asyncpg query and the same query
through SQLAlchemy's ``session.execute(text(...))``, in the same run; an in-process shapely
STRtree for reference. Bulk: locating a table of points with the project's SQL against the
planner's default join and the hand-written grids-outer LATERAL join.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg
import numpy as np
import shapely
from sqlalchemy import text

from api.admin_db import dsn
from api.copies import Copies
from api.db import Database
from bench.common import rate, ratio, seeded_database
from geo.locator import locate, locate_table

RAW_SQL = """
SELECT g.code, g.community_code, g.area_code FROM unit_grids g
WHERE ST_Intersects(g.geom, ST_SetSRID(ST_MakePoint($1, $2), 4490)) LIMIT 1
"""
ORM_SQL = """
SELECT g.code, g.community_code, g.area_code FROM unit_grids g
WHERE ST_Intersects(g.geom, ST_SetSRID(ST_MakePoint(:x, :y), 4490)) LIMIT 1
"""


def _points(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # The gridded centre of 鹤城区.
    return rng.uniform(109.972, 110.028, n), rng.uniform(27.512, 27.568, n)


async def single(url: str, n: int) -> None:
    xs, ys = _points(n + 500)
    print(f"\nSingle-point lookups ({n:,} points, one connection):")
    raw = await asyncpg.connect(dsn(url))
    stmt = await raw.prepare(RAW_SQL)
    raw_rate = await rate("raw asyncpg prepared query (baseline)", n, lambda i: stmt.fetchrow(xs[i], ys[i]))
    await raw.close()

    db = Database(url, pool_size=1)
    async with db.sessions() as session:
        orm_rate = await rate(
            "SQLAlchemy session.execute(text(...))",
            n,
            lambda i: session.execute(text(ORM_SQL), {"x": float(xs[i]), "y": float(ys[i])}),
        )
        db_path = await rate(
            "geo.locator.locate, database path (one prepared round trip)",
            n,
            lambda i: locate(session, float(xs[i]), float(ys[i]), "cgcs2000"),
        )
        copies = await Copies(dsn(url)).start()
        index = copies.grid_index.current()
        ours = await rate(
            "geo.locator.locate with the in-process grid index",
            n,
            lambda i: locate(session, float(xs[i]), float(ys[i]), "cgcs2000", index),
        )
        await copies.stop()
        wkb = (await session.execute(text("SELECT ST_AsBinary(geom) FROM unit_grids"))).scalars().all()
    await db.dispose()

    tree = shapely.STRtree(shapely.from_wkb(wkb))
    pts = shapely.points(xs, ys)

    async def strtree(i: int) -> object:
        return tree.query(pts[i], predicate="intersects")

    await rate("in-process shapely STRtree (reference)", n, strtree)
    ratio("locator (as the API runs it, with the index) / raw prepared query", ours, raw_rate, 0.7)
    ratio("locator database path / raw prepared query (for comparison)", db_path, raw_rate, 0.0)
    ratio("SQLAlchemy text() / raw prepared query (for comparison)", orm_rate, raw_rate, 0.0)


async def bulk(url: str, n: int) -> None:
    xs, ys = _points(n, seed=11)
    print(f"\nBulk assignment of {n:,} points to grids:")
    conn = await asyncpg.connect(dsn(url))
    await conn.execute("DROP TABLE IF EXISTS bench_points, bench_out")
    await conn.execute(
        "CREATE UNLOGGED TABLE bench_points (id integer PRIMARY KEY, geom geometry(Point, 4490))"
    )
    await conn.execute(
        "INSERT INTO bench_points SELECT i - 1, ST_SetSRID(ST_MakePoint(x, y), 4490) "
        "FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY t(x, y, i)",
        xs.tolist(),
        ys.tolist(),
    )
    await conn.execute("CREATE INDEX ON bench_points USING gist (geom); ANALYZE bench_points")
    await conn.execute("CREATE UNLOGGED TABLE bench_out (id integer, grid_code text, dist float8)")

    async def timed(label: str, sql: str | None) -> float:
        await conn.execute("TRUNCATE bench_out")
        started = time.perf_counter()
        if sql is None:
            await locate_table(conn, "bench_points", "bench_out")
        else:
            await conn.execute(sql)
        per_s = n / (time.perf_counter() - started)
        located = await conn.fetchval("SELECT count(*) FROM bench_out")
        print(f"  {label:<58} {per_s:>10,.0f} points/s  ({located:,} located)")
        return per_s

    default = await timed(
        "planner's default join (INSERT…SELECT … JOIN ON ST_Intersects)",
        "INSERT INTO bench_out SELECT p.id, g.code, 0 FROM bench_points p "
        "JOIN unit_grids g ON ST_Intersects(g.geom, p.geom)",
    )
    lateral = await timed(
        # OFFSET 0 keeps the planner from flattening the LATERAL subquery back into a
        # points-outer nested loop, which it otherwise does for ST_Intersects.
        "grids outer, LATERAL into GiST-indexed points (best hand-written)",
        "INSERT INTO bench_out SELECT p.id, g.code, 0 FROM unit_grids g "
        "CROSS JOIN LATERAL (SELECT id FROM bench_points p WHERE ST_Intersects(g.geom, p.geom) OFFSET 0) p",
    )
    ours = await timed("geo.locator.locate_table (edges, 50 m snapping)", None)
    await conn.execute("DROP TABLE bench_points, bench_out")
    await conn.close()
    best = max(default, lateral)
    ratio("locate_table / best hand-written join", ours, best, 0.5)
    ratio("best hand-written / planner's default join (for comparison)", best, default, 0.0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=5000, help="single lookups per method")
    parser.add_argument("--bulk", type=int, default=1_000_000, help="points in the bulk run")
    args = parser.parse_args()
    _, url = await seeded_database()
    await single(url, args.single)
    await bulk(url, args.bulk)


if __name__ == "__main__":
    asyncio.run(main())
