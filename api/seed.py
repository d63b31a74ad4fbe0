"""``citygrid seed huaihua``: the Huaihua demo, loaded idempotently.

Real county outlines; generated (and marked so) management areas, streets, communities,
grids, components, units, people and beats. A fingerprint of everything the seed is made
from lets a second run skip the work.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cases import demo_rules
from cases import seed as cases_seed
from geo import addressing, boundaries, demo_areas
from grids import demo
from grids import seed as grids_seed

NAME = "huaihua"
_INPUTS = [
    Path(demo.__file__),
    Path(grids_seed.__file__),
    Path(cases_seed.__file__),
    Path(demo_rules.__file__),
    Path(boundaries.__file__),
    Path(addressing.__file__),
    Path(demo_areas.__file__),
    Path(__file__),
    *sorted(boundaries.DATA.glob("*.geojson")),
    *sorted(cases_seed.CATALOGUE.glob("*.csv")),
]


def fingerprint() -> str:
    digest = hashlib.sha256()
    for path in _INPUTS:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class SeedResult:
    skipped: bool
    seconds: float
    grids: int
    components: int
    new_accounts: int


async def seed_huaihua(session: AsyncSession, password: str | None, force: bool = False) -> SeedResult:
    """Load the demo; ``password`` is given to new accounts (None: accounts without one)."""
    started = time.perf_counter()
    fp = fingerprint()
    done = await session.scalar(text("SELECT fingerprint FROM seed_runs WHERE name = :n"), {"n": NAME})
    if done == fp and not force:
        grids = await session.scalar(text("SELECT count(*) FROM unit_grids"))
        comps = await session.scalar(text("SELECT count(*) FROM components"))
        return SeedResult(True, time.perf_counter() - started, grids, comps, 0)

    counties = boundaries.county_outlines()
    city = demo.generate({code: outline for code, (_, outline) in counties.items()})
    # One transaction: a half-loaded demo is never left behind.
    await grids_seed.load_geography(session, city, counties, boundaries.SOURCE)
    await cases_seed.load_catalogue(session)
    units = cases_seed.demo_units((s.code, s.name, s.area_code) for s in city.streets)
    await cases_seed.load_units(session, units)
    await demo_rules.load_demo_rules(session)
    await grids_seed.load_components(session, city, cases_seed.component_owner)
    await addressing.load_addressing(session, city)
    await demo_areas.load_demo_areas(session)
    people = cases_seed.demo_people(units)
    new_accounts = await cases_seed.load_people(session, people, password)
    collectors = [p.username for p in people if "collector" in p.roles]
    await grids_seed.load_beats(session, grids_seed.split_beats(city, collectors))
    await session.execute(
        text(
            "INSERT INTO seed_runs (name, fingerprint) VALUES (:n, :f) "
            "ON CONFLICT (name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, loaded_at = now()"
        ),
        {"n": NAME, "f": fp},
    )
    await session.commit()
    return SeedResult(
        False, time.perf_counter() - started, len(city.grids), len(city.components), new_accounts
    )


DEMO_ACCOUNTS = [
    ("collector01 … collector78", "field collectors (采集员), each with a beat of grids"),
    ("operator01 … operator13", "seat operators (坐席员)"),
    ("supervisor01 … supervisor03", "shift supervisors (值班长)"),
    ("planner01", "planner (规划/考核)"),
    ("admin", "administrator"),
    ("unit-<unit code>", "one user per responsible unit, e.g. unit-water, unit-hw-hc, unit-cgj-hc"),
]
