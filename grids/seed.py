"""Load the generated demo geography (grids.demo) into the geography tables, and demo beats."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import shapely
from shapely.geometry import MultiPolygon
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from grids.demo import DemoCity

_GEOM = "ST_SetSRID(ST_GeomFromWKB(:wkb), 4490)"
_MULTI = f"ST_Multi({_GEOM})"


def _wkb(geom: shapely.Geometry) -> bytes:
    return shapely.to_wkb(geom)


def _multi(geom: shapely.Geometry) -> bytes:
    return _wkb(geom if isinstance(geom, MultiPolygon) else MultiPolygon([geom]))


async def load_geography(
    session: AsyncSession, city: DemoCity, counties: Mapping[str, tuple[str, MultiPolygon]], source: str
) -> None:
    """Upsert counties (real outlines), management areas, streets, communities and grids."""
    await session.execute(
        text(
            f"INSERT INTO regions (code, level, name, source, generated, geom) "
            f"VALUES (:code, 'county', :name, :source, false, {_MULTI}) ON CONFLICT (code) DO UPDATE "
            f"SET name = EXCLUDED.name, source = EXCLUDED.source, geom = EXCLUDED.geom"
        ),
        [{"code": c, "name": n, "source": source, "wkb": _multi(g)} for c, (n, g) in counties.items()],
    )
    await session.execute(
        text(
            f"INSERT INTO management_areas (code, name, full_name, county_code, generated, geom) "
            f"VALUES (:code, :name, :full, :county, true, {_MULTI}) ON CONFLICT (code) DO UPDATE "
            f"SET name = EXCLUDED.name, full_name = EXCLUDED.full_name, "
            f"county_code = EXCLUDED.county_code, geom = EXCLUDED.geom"
        ),
        [
            {
                "code": a.code,
                "name": a.name,
                "full": a.full_name,
                "county": a.county_code,
                "wkb": _multi(a.geom),
            }
            for a in city.areas
        ],
    )
    for level, regions in (("street", city.streets), ("community", city.communities)):
        await session.execute(
            text(
                f"INSERT INTO regions (code, level, name, parent_code, area_code, generated, source, geom) "
                f"VALUES (:code, :level, :name, :parent, :area, true, 'generated (demo)', {_MULTI}) "
                f"ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, parent_code = EXCLUDED.parent_code, "
                f"area_code = EXCLUDED.area_code, geom = EXCLUDED.geom"
            ),
            [
                {
                    "code": r.code,
                    "level": level,
                    "name": r.name,
                    "parent": r.parent_code,
                    "area": r.area_code,
                    "wkb": _multi(r.geom),
                }
                for r in regions
            ],
        )
    await session.execute(
        text(
            f"INSERT INTO unit_grids (code, community_code, area_code, area_m2, generated, geom) "
            f"VALUES (:code, :community, :area, :m2, true, {_GEOM}) ON CONFLICT (code) DO UPDATE "
            f"SET community_code = EXCLUDED.community_code, area_code = EXCLUDED.area_code, "
            f"area_m2 = EXCLUDED.area_m2, geom = EXCLUDED.geom, updated_at = now() "
            f"WHERE unit_grids.geom IS DISTINCT FROM EXCLUDED.geom"
        ),
        [
            {
                "code": g.code,
                "community": g.community_code,
                "area": g.area_code,
                "m2": g.area_m2,
                "wkb": _wkb(g.geom),
            }
            for g in city.grids
        ],
    )


async def load_components(
    session: AsyncSession, city: DemoCity, owner_of: Callable[[str, str, int], str | None]
) -> None:
    """Upsert the demo components; ``owner_of(class, area, serial)`` names the owner unit code."""
    area_of_grid = {g.code: g.area_code for g in city.grids}
    await session.execute(
        text(
            f"INSERT INTO components (code, class_code, owner_unit_id, generated, geom) "
            f"VALUES (:code, :cls, (SELECT id FROM units WHERE code = :owner), true, {_GEOM}) "
            f"ON CONFLICT (code) DO UPDATE SET class_code = EXCLUDED.class_code, "
            f"owner_unit_id = EXCLUDED.owner_unit_id, geom = EXCLUDED.geom"
        ),
        [
            {
                "code": c.code,
                "cls": c.class_code,
                "wkb": _wkb(c.geom),
                "owner": owner_of(c.class_code, area_of_grid[c.grid_code], int(c.code[-6:])),
            }
            for c in city.components
        ],
    )


def split_beats(city: DemoCity, collectors: Sequence[str]) -> dict[str, str]:
    """Grid code → collector username: contiguous runs of grids, shared in proportion per area.

    Grids are taken community by community in code order (which reads west→east,
    north→south), so each collector's beat is a compact run of neighbouring grids.
    """
    by_area: dict[str, list[str]] = {}
    for grid in sorted(city.grids, key=lambda g: g.code):
        by_area.setdefault(grid.area_code, []).append(grid.code)
    total = len(city.grids)
    areas = sorted(by_area, key=lambda a: -len(by_area[a]))
    # Largest remainder, at least one collector per area.
    quotas = {a: max(1, int(len(collectors) * len(by_area[a]) / total)) for a in areas}
    remainders = sorted(areas, key=lambda a: -(len(collectors) * len(by_area[a]) / total - quotas[a]))
    for a in remainders[: len(collectors) - sum(quotas.values())]:
        quotas[a] += 1
    beats: dict[str, str] = {}
    pool = iter(collectors)
    for area in areas:
        grids = by_area[area]
        n = quotas[area]
        for i in range(n):
            collector = next(pool)
            for code in grids[i * len(grids) // n : (i + 1) * len(grids) // n]:
                beats[code] = collector
    return beats


async def load_beats(session: AsyncSession, beats: Mapping[str, str]) -> None:
    """Assign grids that have no collector yet (a planner's later changes are kept)."""
    await session.execute(
        text(
            "INSERT INTO beats (grid_code, collector_id) "
            "SELECT :grid, id FROM users WHERE username = :collector ON CONFLICT (grid_code) DO NOTHING"
        ),
        [{"grid": g, "collector": c} for g, c in beats.items()],
    )
