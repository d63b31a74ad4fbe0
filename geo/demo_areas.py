"""The Huaihua demo's responsibility areas (责任区域), derived from the demo geography.

Like the grids they are made up (and stored with ``generated = true``), but laid on the demo
city so that they look real to an operator:

* property-managed compounds (物业管理区域) around the demo's compound landmarks (小区) in
  鹤城区 and 经开区: the landmark's unit grid and 1–5 neighbours of the same block (never across
  a road), set back from the road centre-lines and by a wall's width from the neighbours,
  each managed by one of the six demo property companies;
* the parks around the park landmarks (the whole block, owner 园林绿化服务中心) and 五溪广场
  (owner 市城管局);
* road maintenance sections (道路养护标段): 24 m bands along four arterials — two city-run
  (市管道路, owner 市城管局) and one district-run road in each of 鹤城区 and 经开区 — each
  only for road-facility matters;
* three construction sites (施工工地, owner 市住建局) in the development zones;
* a river-bank strip (滨河风光带) beside 沿河大道, for waterside matters only.

The inputs are read from the database: unit grids, and the roads and landmarks of
``geo.addressing`` when they are loaded. Without them the compounds and parks are placed at
drawn grids with made-up names, and there are no road sections or river bank.
Geometry is built in EPSG:4546 metres and stored in EPSG:4490.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.crs import transformer
from geo.responsibility import KINDS

__all__ = ["DemoAreaSeed", "build_demo_areas", "load_demo_areas"]

SEED = 20261127
COMPOUND_AREAS = ("HC", "JK")  # the built-up old town and development zone
SITE_AREAS = ("JK", "GX")
COMPOUNDS = 30
PROPERTY_COMPANIES = {  # unit → the name stem its compounds often carry
    "wy-01": "锦绣",
    "wy-02": "舞水",
    "wy-03": "天星",
    "wy-04": "恒泰",
    "wy-05": "华晟",
    "wy-06": "鹤洲",
}
HALF_WIDTH = {"arterial": 12.0, "secondary": 8.0}  # m from the centre-line to the building line
WALL = 3.0  # m kept free between a compound and the next grid of its block
ROAD_FACILITY_CLASSES = ["06013", "06048", "06049", "06050", "06051", "06052"]
WATERSIDE_CLASSES = ["06015", "06017", "06018", "06024", "06025", "06026", "06046", "06047"]
_COMPOUND_SUFFIXES = ("花园", "小区", "家园", "新村", "雅苑", "华府", "名城", "佳园")
_SITES = (
    "怀化国际陆港综合物流园二期施工工地",
    "鹤洲新城安置房项目施工工地",
    "高新区标准厂房三期施工工地",
)
_MAX_COMPOUND_GRIDS = 6
_MAX_PARK_GRIDS = 10
_TOUCH_DEG = 5e-5  # ≈ 5 m: two grids sharing less boundary merely touch at a corner
_ON_ROAD_DEG = 1e-5  # ≈ 1 m: a grid edge this close to a centre-line is the road

_TO_METRIC = transformer(4490, 4546)
_TO_LONLAT = transformer(4546, 4490)


@dataclass(frozen=True)
class DemoAreaSeed:
    """One generated area, geometry in lon/lat (EPSG:4490)."""

    name: str
    kind: str
    owner: str  # unit code
    geom: MultiPolygon
    matter_classes: list[str] | None = None


@dataclass(frozen=True)
class _Grid:
    code: str
    community: str
    area: str
    geom: Polygon


@dataclass(frozen=True)
class _Road:
    name: str
    kind: str
    area: str
    geom: BaseGeometry


@dataclass(frozen=True)
class _Place:
    name: str
    kind: str
    geom: Point


def _metric(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: np.column_stack(_TO_METRIC.transform(xy[:, 0], xy[:, 1])))


def _lonlat(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: np.column_stack(_TO_LONLAT.transform(xy[:, 0], xy[:, 1])))


def _polygon(geom: BaseGeometry) -> Polygon | None:
    """The largest polygon of a result (a negative buffer may leave crumbs), or None."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and not p.is_empty]
    return max(parts, key=lambda p: p.area) if parts else None


class _City:
    """The grids with their block neighbourhood (neighbours not across a road), on demand."""

    def __init__(self, grids: Sequence[_Grid], roads: Sequence[_Road]) -> None:
        self.grids = list(grids)
        self.tree = STRtree([g.geom for g in self.grids])
        self.roads = list(roads)
        self.road_tree = STRtree([r.geom for r in self.roads]) if self.roads else None
        self._nbrs: dict[int, list[tuple[int, float]]] = {}

    def at(self, point: Point) -> int | None:
        hits = self.tree.query(point, predicate="intersects")
        return int(min(hits)) if len(hits) else None

    def _across_road(self, i: int, j: int, shared: BaseGeometry) -> bool:
        a, b = self.grids[i], self.grids[j]
        if a.community != b.community:
            return True  # communities are whole blocks: their boundaries run along roads
        if self.road_tree is None:
            return False
        # The middle of the longest shared piece: its ends may well touch the road it meets.
        piece = max(shapely.get_parts(shared), key=lambda g: g.length)
        probe = shapely.line_interpolate_point(piece, 0.5, normalized=True)
        return len(self.road_tree.query(probe, predicate="dwithin", distance=_ON_ROAD_DEG)) > 0

    def neighbours(self, i: int) -> list[tuple[int, float]]:
        """Grids of the same block sharing an edge with grid ``i``, longest edge first."""
        if i not in self._nbrs:
            out = []
            geom = self.grids[i].geom
            for j in sorted(int(j) for j in self.tree.query(geom, predicate="intersects")):
                if j == i:
                    continue
                shared = shapely.intersection(geom.boundary, self.grids[j].geom.boundary)
                if shared.length >= _TOUCH_DEG and not self._across_road(i, j, shared):
                    out.append((j, shared.length))
            self._nbrs[i] = sorted(out, key=lambda t: (-t[1], t[0]))
        return self._nbrs[i]

    def grow(self, start: int, size: int, taken: set[int]) -> list[int]:
        """Up to ``size`` free grids of ``start``'s block, the nearest first: a compact block."""
        members = [start]
        centre = np.asarray(self.grids[start].geom.centroid.coords[0])
        scale = np.array([np.cos(np.radians(centre[1])), 1.0])  # degrees of lon are shorter

        def distance(j: int) -> float:
            return float(np.hypot(*((np.asarray(self.grids[j].geom.centroid.coords[0]) - centre) * scale)))

        while len(members) < size:
            options = {j for m in members for j, _ in self.neighbours(m)} - taken - set(members)
            if not options:
                break
            members.append(min(options, key=lambda j: (distance(j), j)))
        return members

    def outline(self, members: Iterable[int], wall: float = WALL) -> Polygon | None:
        """The members' union in metres, set back from the roads near it and by ``wall``."""
        union = shapely.union_all([_metric(self.grids[m].geom) for m in members])
        if self.road_tree is not None:
            near = self.road_tree.query(_lonlat(union.buffer(20.0)), predicate="intersects")
            if len(near):
                window = union.buffer(30.0)  # a road runs for kilometres: only its piece here
                band = shapely.union_all(
                    [
                        _metric(self.roads[r].geom)
                        .intersection(window)
                        .buffer(HALF_WIDTH.get(self.roads[r].kind, 8.0))
                        for r in near
                    ]
                )
                union = union.difference(band)
        return _polygon(union.buffer(-wall, join_style="mitre").simplify(0.5))


def _multi(metric: BaseGeometry) -> MultiPolygon:
    geom = _lonlat(metric)
    geom = geom if geom.is_valid else shapely.make_valid(geom)
    return MultiPolygon([p for p in shapely.get_parts(geom) if isinstance(p, Polygon)])


def _company(name: str, rng: np.random.Generator) -> str:
    for unit, stem in PROPERTY_COMPANIES.items():
        if stem in name:
            return unit
    return sorted(PROPERTY_COMPANIES)[int(rng.integers(len(PROPERTY_COMPANIES)))]


def _drawn_sites(
    city: _City,
    areas: Sequence[str],
    count: int,
    rng: np.random.Generator,
    gap_m: float = 150.0,
    avoid: Sequence[Point] = (),
) -> list[int]:
    """``count`` grids of ``areas`` drawn at random, ``gap_m`` apart and from ``avoid``."""
    members = np.array([i for i, g in enumerate(city.grids) if g.area in areas], dtype=int)
    if members.size == 0:
        return []
    points = shapely.get_coordinates(shapely.point_on_surface([city.grids[i].geom for i in members]))
    xy = np.column_stack(_TO_METRIC.transform(points[:, 0], points[:, 1]))
    placed = [np.asarray(_metric(p).coords[0]) for p in avoid]
    chosen: list[int] = []
    for k in rng.permutation(members.size):
        if not placed or np.min(np.hypot(*(np.asarray(placed) - xy[k]).T)) >= gap_m:
            chosen.append(int(members[k]))
            placed.append(xy[k])
            if len(chosen) == count:
                break
    return chosen


def _road_sections(
    roads: Sequence[_Road], areas: dict[str, BaseGeometry], rng: np.random.Generator
) -> list[DemoAreaSeed]:
    """Maintenance sections along arterials; a later section leaves an earlier one's crossings."""
    arterials = {
        a: sorted((r for r in roads if r.kind == "arterial" and r.area == a), key=lambda r: r.name)
        for a in COMPOUND_AREAS
    }
    plan: list[tuple[_Road, str, str]] = []
    hc = [arterials["HC"][int(k)] for k in rng.permutation(len(arterials["HC"]))]
    jk = [arterials["JK"][int(k)] for k in rng.permutation(len(arterials["JK"]))]
    for road in hc[:2]:
        plan.append((road, "cgj", f"{road.name}（市管道路）养护标段"))
    for road, unit, who in ((hc[2:3], "cgj-hc", "鹤城区"), (jk[:1], "cgj-jk", "经开区")):
        plan += [(r, unit, f"{r.name}（{who}区管道路）养护标段") for r in road]
    out: list[DemoAreaSeed] = []
    done: BaseGeometry | None = None
    for road, unit, name in plan:
        band = _metric(road.geom).buffer(HALF_WIDTH["arterial"], cap_style="flat")
        band = band.intersection(areas[road.area])
        if done is not None:
            band = band.difference(done)
        done = band if done is None else done.union(band)
        out.append(DemoAreaSeed(name, "road_contract", unit, _multi(band), ROAD_FACILITY_CLASSES))
    return out


def _river_bank(
    roads: Sequence[_Road], areas: dict[str, BaseGeometry]
) -> tuple[DemoAreaSeed | None, BaseGeometry]:
    """The waterside strip 15–60 m off the riverside road (沿河…), and its metric geometry."""
    river = next(
        (r for r in sorted(roads, key=lambda r: (r.area, r.name)) if r.name.startswith("沿河")), None
    )
    if river is None:
        return None, Polygon()
    line = _metric(river.geom)
    strip = line.buffer(60.0, single_sided=True).difference(line.buffer(15.0))
    strip = strip.intersection(areas[river.area])
    seed = DemoAreaSeed(
        f"舞水河滨河风光带（{river.name}段）", "river_bank", "garden", _multi(strip), WATERSIDE_CLASSES
    )
    return seed, strip


def build_demo_areas(
    grids: Sequence[_Grid],
    roads: Sequence[_Road],
    places: Sequence[_Place],
    areas: dict[str, BaseGeometry],
    community_names: dict[str, str],
    seed: int = SEED,
) -> list[DemoAreaSeed]:
    """The demo areas from the geography (``areas``: management area outlines in metres)."""
    rng = np.random.default_rng(seed)
    city = _City(grids, roads)
    out: list[DemoAreaSeed] = []
    river, strip = _river_bank(roads, areas) if roads else (None, Polygon())
    if river is not None:
        out.append(river)
    if roads:
        out += _road_sections(roads, areas, rng)
    taken = (
        {int(i) for i in city.tree.query(_lonlat(strip), predicate="intersects")}
        if not strip.is_empty
        else set()
    )

    def place(members: list[int], wall: float = WALL) -> MultiPolygon | None:
        outline = city.outline(members, wall)
        if outline is None or outline.area < 1_000.0:
            return None
        taken.update(members)
        return _multi(outline)

    # Parks (and the city square): the landmark's whole block.
    parks = [p for p in places if p.kind == "park"]
    if not parks:
        parks = [
            _Place(n, "park", city.grids[i].geom.representative_point())
            for n, i in zip(
                ("迎丰公园", "人民公园", "太平溪湿地公园"), _drawn_sites(city, ["HC"], 3, rng), strict=False
            )
        ]
    for p in parks:
        i = city.at(p.geom)
        if i is None or i in taken:
            continue
        geom = place(city.grow(i, _MAX_PARK_GRIDS, taken), wall=6.0)
        if geom is None:
            continue
        square = p.name.endswith("广场")
        out.append(
            DemoAreaSeed(p.name, "public_square" if square else "park", "cgj" if square else "garden", geom)
        )

    # Compounds: the landmark's grid and a few neighbours of its block; drawn grids with
    # made-up names make up the number where the landmarks are fewer.
    compounds = [p for p in places if p.kind == "compound"]
    used = {p.name for p in places}
    made = 0
    drawn = iter(_drawn_sites(city, COMPOUND_AREAS, COMPOUNDS, rng, avoid=[p.geom for p in places]))
    while made < COMPOUNDS:
        if compounds:
            p = compounds.pop(0)
        else:
            i = next(drawn, None)
            if i is None:
                break
            stem = re.sub(r"(社区|村)$", "", community_names.get(city.grids[i].community, "新城"))
            name = next((stem + s for s in _COMPOUND_SUFFIXES if stem + s not in used), None)
            if name is None:
                continue
            used.add(name)
            p = _Place(name, "compound", city.grids[i].geom.representative_point())
        i = city.at(p.geom)
        if i is None or i in taken or city.grids[i].area not in COMPOUND_AREAS:
            continue
        size = int(rng.integers(2, _MAX_COMPOUND_GRIDS + 1))
        geom = place(city.grow(i, size, taken))
        if geom is not None:
            out.append(DemoAreaSeed(p.name, "property_compound", _company(p.name, rng), geom))
            made += 1

    # Construction sites: in the development zones, away from every landmark.
    count = 0
    for i in _drawn_sites(city, SITE_AREAS, 3 * len(_SITES), rng, 400.0, [p.geom for p in places]):
        if i in taken:
            continue
        geom = place(city.grow(i, int(rng.integers(2, 5)), taken), wall=2.0)
        if geom is None:
            continue
        out.append(DemoAreaSeed(_SITES[count], "construction_site", "zjj", geom))
        count += 1
        if count == len(_SITES):
            break
    assert all(a.kind in KINDS for a in out)
    return out


# --- loading --------------------------------------------------------------------------------


async def _inputs(
    session: AsyncSession,
) -> tuple[list[_Grid], list[_Road], list[_Place], dict[str, BaseGeometry], dict[str, str]]:
    grid_rows = await session.execute(
        text("SELECT code, community_code, area_code, ST_AsBinary(geom) AS wkb FROM unit_grids ORDER BY code")
    )
    grids = [
        _Grid(r.code.strip(), r.community_code, r.area_code, shapely.from_wkb(bytes(r.wkb)))
        for r in grid_rows
    ]
    road_rows = await session.execute(
        text("SELECT name, kind, area_code, ST_AsBinary(geom) AS wkb FROM roads ORDER BY area_code, name, id")
    )
    roads = [_Road(r.name, r.kind, r.area_code, shapely.from_wkb(bytes(r.wkb))) for r in road_rows]
    place_rows = await session.execute(
        text(
            "SELECT name, kind, ST_X(geom) AS x, ST_Y(geom) AS y FROM landmarks "
            "WHERE kind IN ('park', 'compound') ORDER BY kind DESC, id"
        )
    )
    places = [_Place(r.name, r.kind, Point(r.x, r.y)) for r in place_rows]
    area_rows = await session.execute(text("SELECT code, ST_AsBinary(geom) AS wkb FROM management_areas"))
    areas = {r.code: _metric(shapely.from_wkb(bytes(r.wkb))) for r in area_rows}
    names = dict(
        (await session.execute(text("SELECT code, name FROM regions WHERE level = 'community'"))).all()
    )
    return grids, roads, places, areas, names


_INSERT = text("""
INSERT INTO responsibility_areas (name, kind, owner_unit_id, matter_classes, generated, geom)
SELECT :name, :kind, u.id, :classes, true, ST_Multi(ST_GeomFromWKB(:wkb, 4490))
FROM units u WHERE u.code = :owner
""")


async def load_demo_areas(session: AsyncSession) -> int:
    """Replace the generated responsibility areas with the demo's (idempotent); how many.

    An area an administrator created or edited (not generated) is kept, and a demo area of
    the same kind and name is then left out. In the caller's transaction; no commit. Raises
    ``ValueError`` when an owner unit is missing.
    """
    seeds = build_demo_areas(*await _inputs(session))
    owners = sorted({s.owner for s in seeds})
    known = set(await session.scalars(text("SELECT code FROM units WHERE code = ANY(:c)"), {"c": owners}))
    missing = [o for o in owners if o not in known]
    if missing:
        raise ValueError(f"demo responsibility areas: unknown owner units {', '.join(missing)}")
    await session.execute(text("DELETE FROM responsibility_areas WHERE generated"))
    kept = {
        (r.kind, r.name) for r in await session.execute(text("SELECT kind, name FROM responsibility_areas"))
    }
    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "owner": s.owner,
            "classes": s.matter_classes,
            "wkb": shapely.to_wkb(s.geom),
        }
        for s in seeds
        if (s.kind, s.name) not in kept
    ]
    if rows:
        await session.execute(_INSERT, rows)
    return len(rows)
