"""Demo addressing (地址): named roads, door plates (门牌, 路名 + 号) and landmarks.

Everything here is derived deterministically from the generated demo city (grids.demo) and
stored with ``generated = true``:

* roads: the demo's road centre-lines, the pieces of one name in one management area merged
  into a MultiLineString;
* door plates every 20–30 m along both sides of the arterials and of the secondary roads that
  have their own name (not the numbered lanes …一巷), numbered as Chinese cities do: from west
  to east on a road running east–west, from north to south on one running north–south, odd
  numbers on the left and even numbers on the right (左单右双);
* about 150 landmarks on real blocks: schools, markets, hospitals and health centres, parks,
  bus stops named after the nearest crossing road, and residential compounds (小区). Most
  names take the stem of the nearest road or the community, as real ones do.

Geometry is computed in EPSG:4546 metres and stored in EPSG:4490 lon/lat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry import LineString, MultiLineString, Point
from shapely.geometry.base import BaseGeometry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from geo.crs import transformer
from grids.demo import DemoCity

__all__ = ["Landmark", "Plate", "Road", "addressing", "load_addressing", "road_stem"]

PLATE_SPACING = (20.0, 30.0)  # m between neighbouring plates on one side
# Plates stand at the building line: this far (m, ± jitter) from the centre-line.
PLATE_OFFSET = {"arterial": (20.0, 2.0), "secondary": (12.0, 1.5)}
PLATE_END_MARGIN = 6.0  # m kept free at either end of a road piece
LANE = re.compile(r"巷$")
# Road type suffixes, longest first; an optional direction (中路, 南路…) goes with them for stems.
ROAD_SUFFIX = re.compile(r"(大道|大街|路|街|巷)$")
_DIRECTED_SUFFIX = re.compile(r"[东南西北中](大道|大街|路|街)$")

_TO_METRIC = transformer(4490, 4546)
_TO_LONLAT = transformer(4546, 4490)

# Area → name prefix of its district-run schools (区属/县属学校).
_AREA_PREFIX = {"HC": "鹤城区", "JK": "经开区", "GX": "高新区", "ZF": "中方县"}
# Where generic landmarks go: the old town gets the most.
_AREA_WEIGHT = {"HC": 0.45, "JK": 0.2, "GX": 0.2, "ZF": 0.15}

# (kind, name, area) of the city-level landmarks every resident knows by name.
_FIXED: tuple[tuple[str, str, str], ...] = (
    ("hospital", "怀化市第一人民医院", "HC"),
    ("hospital", "怀化市第二人民医院", "HC"),
    ("hospital", "怀化市中医医院", "HC"),
    ("hospital", "怀化市妇幼保健院", "HC"),
    ("hospital", "鹤城区人民医院", "HC"),
    ("hospital", "经开区人民医院", "JK"),
    ("hospital", "中方县人民医院", "ZF"),
    ("school", "怀化学院", "HC"),
    ("school", "湖南医药学院", "HC"),
    ("school", "怀化职业技术学院", "JK"),
    ("school", "怀化市第一中学", "HC"),
    ("school", "怀化市第三中学", "HC"),
    ("school", "怀化市第五中学", "HC"),
    ("school", "怀化市铁路第一中学", "HC"),
    ("school", "怀化高新区实验学校", "GX"),
    ("school", "中方县第一中学", "ZF"),
    ("park", "舞水公园", "HC"),
    ("park", "迎丰公园", "HC"),
    ("park", "太平溪湿地公园", "HC"),
    ("park", "中坡山森林公园", "HC"),
    ("park", "鹤洲公园", "HC"),
    ("park", "五溪广场", "HC"),
    ("park", "经开区中央公园", "JK"),
    ("park", "高新区湿地公园", "GX"),
    ("park", "中方县舞水河公园", "ZF"),
    ("market", "怀化农产品大市场", "JK"),
    ("market", "红星农贸市场", "HC"),
    ("compound", "锦绣花园", "HC"),
    ("compound", "天星小区", "HC"),
    ("compound", "舞水家园", "HC"),
)

# (kind, template, how many): {prefix} the area's, {stem} of the nearest road or community.
_GENERIC: tuple[tuple[str, str, int], ...] = (
    ("school", "{prefix}{stem}小学", 10),
    ("school", "{prefix}{stem}中学", 3),
    ("school", "{stem}幼儿园", 5),
    ("market", "{stem}农贸市场", 9),
    ("hospital", "{stem}社区卫生服务中心", 6),
    ("compound", "{stem}{suffix}", 40),
)
_COMPOUND_SUFFIXES = ("花园", "小区", "家园", "新村", "苑", "华府", "名城", "雅居", "佳园", "公寓", "丽都")
BUS_STOPS = {"HC": 24, "JK": 10, "GX": 10, "ZF": 6}
_BUS_BEFORE_JUNCTION = 40.0  # m: a stop stands short of the crossing, not in it
_LANDMARK_GAP = 120.0  # m between any two landmarks placed on blocks


@dataclass(frozen=True)
class Road:
    """A named road of one management area (centre-line, lon/lat)."""

    name: str
    kind: str  # "arterial" | "secondary"
    area_code: str
    geom: MultiLineString


@dataclass(frozen=True)
class Plate:
    """A door plate (门牌): road name + number."""

    road: str
    area_code: str
    number: int
    geom: Point

    @property
    def label(self) -> str:
        return f"{self.road}{self.number}号"


@dataclass(frozen=True)
class Landmark:
    """A named place: kind is school, market, hospital, park, bus_stop or compound."""

    name: str
    kind: str
    geom: Point


def road_stem(name: str) -> str:
    """The stem a place takes from a road: 迎丰中路 → 迎丰, 城东路 → 城东, 沿河大道 → 沿河."""
    directed = _DIRECTED_SUFFIX.sub("", name)
    if directed != name and len(directed) >= 2:
        return directed
    return ROAD_SUFFIX.sub("", name)


def _metric(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: np.column_stack(_TO_METRIC.transform(xy[:, 0], xy[:, 1])))


def _lonlat_xy(xy: np.ndarray) -> np.ndarray:
    if len(xy) == 0:
        return xy.reshape(0, 2)
    return np.column_stack(_TO_LONLAT.transform(xy[:, 0], xy[:, 1]))


def _roads(city: DemoCity) -> list[Road]:
    """The demo's roads, pieces of one name per area merged, in (area, name) order."""
    parts: dict[tuple[str, str], list[LineString]] = {}
    kinds: dict[tuple[str, str], set[str]] = {}
    for r in city.roads:
        key = (r.area_code, r.name)
        parts.setdefault(key, []).extend(shapely.get_parts(r.geom).tolist())
        kinds.setdefault(key, set()).add(r.kind)
    return [
        Road(
            name,
            "arterial" if "arterial" in kinds[(area, name)] else "secondary",
            area,
            MultiLineString(parts[(area, name)]),
        )
        for area, name in sorted(parts)
    ]


def _oriented_parts(geom: MultiLineString) -> list[LineString]:
    """The pieces turned to run west→east (east–west road) or north→south, in that order."""
    pieces = [p for p in geom.geoms if p.length > 0]
    ends = np.array([[*p.coords[0], *p.coords[-1]] for p in pieces])
    span = (ends[:, 2:] - ends[:, :2]).sum(axis=0)
    # Pieces of one road may be stored head to tail either way: align them with the road's span.
    axis = np.array([1.0, 0.0]) if abs(span[0]) >= abs(span[1]) else np.array([0.0, -1.0])
    out = []
    for p, e in zip(pieces, ends, strict=True):
        out.append(p if (e[2:] - e[:2]) @ axis >= 0 else LineString(p.coords[::-1]))
    return sorted(out, key=lambda p: float(np.asarray(p.coords[0]) @ axis))


def _side_points(
    line: LineString, side: float, offset: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Plate positions along one side (+1 left, -1 right) of a piece, in order along it."""
    length = line.length
    first = PLATE_END_MARGIN + rng.uniform(0.0, PLATE_SPACING[0] / 2)
    count = max(int((length - first) / PLATE_SPACING[0]) + 1, 0)
    s = first + np.concatenate([[0.0], np.cumsum(rng.uniform(*PLATE_SPACING, count))])
    s = s[s <= length - PLATE_END_MARGIN]
    if s.size == 0:
        return np.empty((0, 2))
    p = shapely.get_coordinates(shapely.line_interpolate_point(line, s))
    a = shapely.get_coordinates(shapely.line_interpolate_point(line, np.maximum(s - 1.0, 0.0)))
    b = shapely.get_coordinates(shapely.line_interpolate_point(line, np.minimum(s + 1.0, length)))
    t = (b - a) / np.maximum(np.hypot(*(b - a).T), 1e-9)[:, None]
    left = np.column_stack([-t[:, 1], t[:, 0]])
    dist = offset[0] + rng.uniform(-offset[1], offset[1], s.size)
    return p + left * (side * dist)[:, None]


def _numbered(road: Road) -> bool:
    return road.kind == "arterial" or not LANE.search(road.name)


def _plates(
    roads: Sequence[Road],
    metric: Sequence[BaseGeometry],
    areas: dict[str, BaseGeometry],
    rng: np.random.Generator,
) -> list[Plate]:
    """Door plates on both sides of every numbered road, skipping junctions and the area edge."""
    pieces = [(i, p) for i, g in enumerate(metric) for p in shapely.get_parts(g)]
    owner = np.array([i for i, _ in pieces])
    tree = STRtree([p for _, p in pieces])
    plates: list[Plate] = []
    for i, (road, geom) in enumerate(zip(roads, metric, strict=True)):
        if not _numbered(road):
            continue
        offset = PLATE_OFFSET[road.kind]
        area = areas[road.area_code]
        number = {1.0: 1, -1.0: 2}  # left odd, right even (左单右双)
        for piece in _oriented_parts(geom):
            for side in (1.0, -1.0):
                xy = _side_points(piece, side, offset, rng)
                if len(xy) == 0:
                    continue
                points = shapely.points(xy)
                # Within the building line of another road the plate would stand in a junction.
                hit, line = tree.query(points, predicate="dwithin", distance=offset[0] - offset[1] - 2.0)
                crowded = set(hit[owner[line] != i].tolist())
                keep = shapely.contains(area, points)
                lonlat = _lonlat_xy(xy)
                for k in range(len(xy)):
                    if keep[k] and k not in crowded:
                        plates.append(Plate(road.name, road.area_code, number[side], Point(lonlat[k])))
                        number[side] += 2
    return plates


def _bus_stops(
    roads: Sequence[Road],
    metric: Sequence[BaseGeometry],
    areas: dict[str, BaseGeometry],
    rng: np.random.Generator,
    taken: set[str],
) -> list[tuple[Landmark, np.ndarray]]:
    """Stops along the arterials, short of a junction and named after the crossing road."""
    out: list[tuple[Landmark, np.ndarray]] = []
    named = [i for i, r in enumerate(roads) if not LANE.search(r.name)]
    tree = STRtree([metric[i] for i in named])
    for area_code, wanted in BUS_STOPS.items():
        candidates: list[tuple[int, LineString, float, int]] = []  # road, piece, position, crossing
        for i, road in enumerate(roads):
            if road.kind != "arterial" or road.area_code != area_code:
                continue
            for piece in _oriented_parts(metric[i]):
                for j in tree.query(piece, predicate="dwithin", distance=1.0).tolist():
                    other = named[j]
                    if other == i:
                        continue
                    junction = shapely.shortest_line(piece, metric[other]).coords[0]
                    s = piece.project(Point(junction)) - _BUS_BEFORE_JUNCTION
                    if s > PLATE_END_MARGIN:
                        candidates.append((i, piece, s, other))
        order = rng.permutation(len(candidates))
        placed = 0
        for c in order.tolist():
            if placed == wanted:
                break
            i, piece, s, other = candidates[c]
            p = np.asarray(piece.interpolate(s).coords[0])
            q = np.asarray(piece.interpolate(s + 1.0).coords[0])
            t = (q - p) / max(float(np.hypot(*(q - p))), 1e-9)
            xy = p + np.array([t[1], -t[0]]) * 10.0  # right-hand kerb: traffic keeps right
            if not shapely.contains_xy(areas[area_code], *xy):
                continue
            if any(np.hypot(*(xy - o)) < 300.0 for _, o in out):
                continue
            crossing, own = roads[other].name, roads[i].name
            name = next(
                (n for n in (f"{crossing}公交站", f"{crossing}{own}口公交站") if n not in taken), None
            )
            if name is None:
                continue
            taken.add(name)
            out.append((Landmark(name, "bus_stop", Point(_lonlat_xy(xy[None])[0])), xy))
            placed += 1
    return out


class _Sites:
    """Blocks free for a landmark: grid interiors, drawn area by area in a shuffled order."""

    def __init__(self, city: DemoCity, rng: np.random.Generator) -> None:
        self.rng = rng
        lonlat = shapely.point_on_surface(np.asarray([g.geom for g in city.grids], dtype=object))
        self.lonlat = shapely.get_coordinates(lonlat)
        self.xy = np.column_stack(_TO_METRIC.transform(self.lonlat[:, 0], self.lonlat[:, 1]))
        self.community = [g.community_code for g in city.grids]
        self.queue: dict[str, list[int]] = {}
        for area in _AREA_PREFIX:
            members = [i for i, g in enumerate(city.grids) if g.area_code == area]
            self.queue[area] = [members[k] for k in rng.permutation(len(members))]
        self.placed: list[np.ndarray] = []

    def reserve(self, xy: np.ndarray) -> None:
        self.placed.append(xy)

    def take(self, area: str) -> int:
        """A grid of ``area`` at least _LANDMARK_GAP from every landmark placed so far."""
        queue = self.queue[area]
        while queue:
            i = queue.pop()
            if all(np.hypot(*(self.xy[i] - p)) >= _LANDMARK_GAP for p in self.placed):
                self.placed.append(self.xy[i])
                return i
        raise RuntimeError(f"no free block left for a landmark in {area}")

    def area(self) -> str:
        areas = list(_AREA_WEIGHT)
        return areas[int(self.rng.choice(len(areas), p=list(_AREA_WEIGHT.values())))]


def _landmarks(
    city: DemoCity,
    roads: Sequence[Road],
    metric: Sequence[BaseGeometry],
    areas: dict[str, BaseGeometry],
    rng: np.random.Generator,
) -> list[Landmark]:
    taken = {name for _, name, _ in _FIXED}
    stops = _bus_stops(roads, metric, areas, rng, taken)
    sites = _Sites(city, rng)
    for _, xy in stops:
        sites.reserve(xy)
    named = {
        a: [i for i, r in enumerate(roads) if r.area_code == a and not LANE.search(r.name)]
        for a in _AREA_PREFIX
    }
    road_tree = {a: STRtree([metric[i] for i in named[a]]) for a in _AREA_PREFIX}
    community_name = {c.code: c.name for c in city.communities}

    out = [lm for lm, _ in stops]
    for kind, name, area in _FIXED:
        i = sites.take(area)
        out.append(Landmark(name, kind, Point(sites.lonlat[i])))
    for kind, template, count in _GENERIC:
        made = 0
        while made < count:
            area = sites.area()
            i = sites.take(area)
            community = community_name[sites.community[i]]
            rural = community.endswith("村")
            if kind == "hospital" and rural:
                continue  # villages have a 卫生室, not a 社区卫生服务中心
            road = roads[named[area][int(road_tree[area].nearest(Point(sites.xy[i])))]]
            use_road = kind != "hospital" and (kind != "compound" or rng.random() < 0.6)
            stem = road_stem(road.name) if use_road else re.sub(r"(社区|村)$", "", community)
            suffix = _COMPOUND_SUFFIXES[int(rng.integers(len(_COMPOUND_SUFFIXES)))]
            name = template.format(prefix=_AREA_PREFIX[area], stem=stem, suffix=suffix)
            if name in taken:
                continue
            taken.add(name)
            out.append(Landmark(name, kind, Point(sites.lonlat[i])))
            made += 1
    return out


def addressing(city: DemoCity, seed: int = 4312) -> tuple[list[Road], list[Plate], list[Landmark]]:
    """Roads, door plates and landmarks of the demo city; the same city and seed give the same."""
    roads = _roads(city)
    metric = [_metric(r.geom) for r in roads]
    areas = {a.code: _metric(a.geom) for a in city.areas}
    for geom in areas.values():
        shapely.prepare(geom)
    plates = _plates(roads, metric, areas, np.random.default_rng([seed, 11]))
    landmarks = _landmarks(city, roads, metric, areas, np.random.default_rng([seed, 13]))
    return roads, plates, landmarks


# --- loading --------------------------------------------------------------------------------

_ROADS = """
INSERT INTO roads (name, kind, area_code, generated, geom)
SELECT t.name, t.kind, t.area, true, ST_SetSRID(ST_GeomFromWKB(t.wkb), 4490)
FROM unnest(CAST(:names AS text[]), CAST(:kinds AS text[]), CAST(:areas AS text[]), CAST(:wkbs AS bytea[]))
    AS t(name, kind, area, wkb)
ON CONFLICT (name, area_code) DO UPDATE SET kind = EXCLUDED.kind, geom = EXCLUDED.geom WHERE roads.generated
"""
# A generated road that is gone takes its generated plates along; one that real door plates
# were attached to stays.
_STALE_ROADS = """
DELETE FROM roads r WHERE r.generated
  AND NOT EXISTS (SELECT 1 FROM addresses a WHERE a.road_id = r.id AND NOT a.generated)
  AND (r.name, r.area_code) NOT IN (
      SELECT * FROM unnest(CAST(:names AS text[]), CAST(:areas AS text[])))
"""
_PLATES = """
INSERT INTO addresses (road_id, number, label, generated, geom)
SELECT r.id, t.number, t.label, true, ST_SetSRID(ST_MakePoint(t.x, t.y), 4490)
FROM unnest(CAST(:roads AS text[]), CAST(:areas AS text[]), CAST(:numbers AS integer[]),
            CAST(:labels AS text[]), CAST(:xs AS float8[]), CAST(:ys AS float8[]))
    AS t(road, area, number, label, x, y)
JOIN roads r ON r.name = t.road AND r.area_code = t.area
ON CONFLICT (road_id, number) DO NOTHING
"""
_LANDMARKS = """
INSERT INTO landmarks (name, kind, generated, geom)
SELECT t.name, t.kind, true, ST_SetSRID(ST_MakePoint(t.x, t.y), 4490)
FROM unnest(CAST(:names AS text[]), CAST(:kinds AS text[]), CAST(:xs AS float8[]), CAST(:ys AS float8[]))
    AS t(name, kind, x, y)
"""


async def load_addressing(session: AsyncSession, city: DemoCity, seed: int = 4312) -> dict[str, int]:
    """Replace the generated roads, door plates and landmarks (idempotent; real rows are kept).

    Roads are upserted so their ids stay stable across reseeds; plates and landmarks are
    replaced wholesale. Needs the management areas loaded (grids.seed.load_geography).
    """
    roads, plates, landmarks = addressing(city, seed)
    names, areas = [r.name for r in roads], [r.area_code for r in roads]
    await session.execute(text("DELETE FROM addresses WHERE generated"))
    await session.execute(text("DELETE FROM landmarks WHERE generated"))
    await session.execute(text(_STALE_ROADS), {"names": names, "areas": areas})
    await session.execute(
        text(_ROADS),
        {
            "names": names,
            "kinds": [r.kind for r in roads],
            "areas": areas,
            "wkbs": [shapely.to_wkb(r.geom) for r in roads],
        },
    )
    await session.execute(
        text(_PLATES),
        {
            "roads": [p.road for p in plates],
            "areas": [p.area_code for p in plates],
            "numbers": [p.number for p in plates],
            "labels": [p.label for p in plates],
            "xs": [p.geom.x for p in plates],
            "ys": [p.geom.y for p in plates],
        },
    )
    await session.execute(
        text(_LANDMARKS),
        {
            "names": [m.name for m in landmarks],
            "kinds": [m.kind for m in landmarks],
            "xs": [m.geom.x for m in landmarks],
            "ys": [m.geom.y for m in landmarks],
        },
    )
    return {"roads": len(roads), "addresses": len(plates), "landmarks": len(landmarks)}
