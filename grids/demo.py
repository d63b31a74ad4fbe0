"""Synthetic geography of the Huaihua demo (怀化演示数据), generated deterministically.

Only the county outlines are real (see geo/data/huaihua/SOURCE.md). Everything below them
is made up, but laid out like a city: four management areas (管理区域) cut from the real
counties, a slightly rotated net of gently bending arterial roads (主干道), secondary roads
(次干道/支路) across every superblock with T-junctions, streets (街道/镇) and communities
(社区/村) grouped from contiguous blocks, unit grids (单元网格, about 10,000 m²) split from the
blocks along the road centre-lines, and components (部件) along the roads.

The layout is computed in EPSG:4546 metres (x = easting, y = northing) and only the final
vertices are converted to EPSG:4490 lon/lat; a vertex of a county outline comes back as its
exact source coordinates, and a vertex shared by two grids maps to one lon/lat pair, so the
grids tile each area without gaps or overlaps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import shapely
from pyproj import Transformer
from shapely import STRtree
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient
from shapely.ops import polygonize, unary_union

from grids.codes import build_component, build_grid, reading_order

__all__ = [
    "CENTRE_BOX",
    "GRID_BOUNDS",
    "DemoArea",
    "DemoCity",
    "DemoComponent",
    "DemoGrid",
    "DemoRegion",
    "DemoRoad",
    "generate",
]

# Grid sizes in m² (EPSG:4546): split pieces above MAX_PIECE towards TARGET_GRID, merge
# pieces below MIN_PIECE; the final grids must lie within GRID_BOUNDS.
TARGET_GRID = 10_000.0
MAX_PIECE = 16_000.0
MIN_PIECE = 4_000.0
GRID_BOUNDS = (3_000.0, 30_000.0)
COMMUNITY_TARGET = 1.1e6  # m², about 110 grids
COMPONENT_TARGET = 4_000
LIGHT_SPACING = 35.0  # m between street lights on an arterial
# The old town (老城区) the demo grids must cover; its arterials carry the street lights.
CENTRE_BOX = (109.97, 27.53, 110.03, 27.57)

_EXTEND = 0.01  # m: cut lines overshoot their piece so that noding always closes the faces
# Degrees (about 50 m) between outline vertices: on shorter edges a straight line in lon/lat
# and one in EPSG:4546 stay within a fraction of a millimetre of each other, so a vertex that
# one area adds on a shared edge barely moves it for the neighbour.
_DENSIFY = 0.0005
_TO_METRIC = Transformer.from_crs("EPSG:4490", "EPSG:4546", always_xy=True)
_TO_LONLAT = Transformer.from_crs("EPSG:4546", "EPSG:4490", always_xy=True)


@dataclass(frozen=True)
class DemoArea:
    """A management area (管理区域): 鹤城区, 经开区, 高新区 or 中方县."""

    code: str
    name: str
    full_name: str
    county_code: str
    geom: MultiPolygon


@dataclass(frozen=True)
class DemoRegion:
    """A street (街道/镇, 9 digits) or community (社区/村, 12 digits)."""

    code: str
    name: str
    level: str  # "street" | "community"
    parent_code: str  # county code of a street, street code of a community
    area_code: str
    geom: MultiPolygon


@dataclass(frozen=True)
class DemoGrid:
    """A unit grid (单元网格) with its 15-digit code."""

    code: str
    community_code: str
    area_code: str
    geom: Polygon
    area_m2: float  # in EPSG:4546


@dataclass(frozen=True)
class DemoRoad:
    """A road centre-line inside one management area."""

    name: str
    kind: str  # "arterial" | "secondary"
    area_code: str
    geom: LineString | MultiLineString


@dataclass(frozen=True)
class DemoComponent:
    """A component instance (部件) with its 17-digit code."""

    code: str
    class_code: str
    geom: Point
    grid_code: str


@dataclass(frozen=True)
class DemoCity:
    """Everything the demo generates, each list sorted by code (roads by area)."""

    areas: list[DemoArea]
    streets: list[DemoRegion]
    communities: list[DemoRegion]
    grids: list[DemoGrid]
    roads: list[DemoRoad]
    components: list[DemoComponent]


@dataclass(frozen=True)
class _AreaSpec:
    code: str
    name: str
    full_name: str
    county_code: str
    bbox: tuple[float, float, float, float]  # lon/lat, intersected with the real county
    minus: str | None  # an area cut out of this one
    # Street names with where each lies: centre, north, south, east, west or "" (any).
    streets: tuple[tuple[str, str], ...]
    villages: bool = False  # communities away from a town's centre are villages (村)


# 鹤城区's box reaches 0.001° past the centre box on three sides so that the centre box is
# covered with room to spare rather than up to the last floating-point digit.
_AREAS = (
    _AreaSpec(
        "HC", "鹤城区", "鹤城区", "431202", (109.969, 27.51, 110.031, 27.571), None,
        (("城中街道", "centre"), ("城北街道", "north"), ("城南街道", "south"),
         ("红星街道", "east"), ("迎丰街道", "west"), ("湖天街道", "")),
    ),
    _AreaSpec(
        "JK", "经开区", "怀化经济技术开发区", "431202", (109.98, 27.465, 110.04, 27.51), "HC",
        (("坨院街道", "north"), ("鸭嘴岩街道", "south")),
    ),
    _AreaSpec(
        "GX", "高新区", "怀化高新技术产业开发区", "431221", (109.965, 27.43, 110.03, 27.48), None,
        (("花桥镇", "west"), ("牌楼镇", "east")),
    ),
    _AreaSpec(
        "ZF", "中方县", "中方县", "431221", (109.93, 27.40, 109.965, 27.45), "GX",
        (("中方镇", "north"), ("泸阳镇", "south")), villages=True,
    ),
)

_ARTERIAL_STEMS = (
    "迎丰", "人民", "天星", "锦溪", "鹤洲", "顺天", "舞水", "湖天", "红星", "府星", "太平", "宏宇",
    "榆市", "钟坡", "盈口", "鹤鸣", "金海", "正清", "迎宾", "沿河", "怀东", "怀北", "高堰", "坨院",
    "杨村", "石门", "凉亭", "铁北", "环城", "兴隆", "芙蓉", "金星", "银湾", "河西", "城东", "花溪",
    "紫荆", "五溪", "沅水", "雪峰", "鹤城", "中方", "兴业", "创新", "科技", "经开", "长丰", "泰康",
    "凤凰", "龙泉", "锦绣", "明珠", "东盛", "西城", "南岳", "北辰", "怀新", "红旗", "振兴", "广场",
)
_SECONDARY_STEMS = (
    "桂花", "荷花", "梨园", "桃源", "杏林", "丹桂", "银杏", "香樟", "枫林", "松林", "竹园", "梅园",
    "兰亭", "玉泉", "清泉", "白沙", "石榴", "青山", "翠屏", "新建", "建设", "团结", "和平", "解放",
    "友谊", "文化", "学院", "书院", "育才", "光明", "幸福", "康宁", "安居", "福寿", "长乐", "永安",
    "金桥", "东风", "五一", "三角坪", "四方坪", "马路口", "坪坡", "大塘", "荷塘", "湾塘", "下坪",
    "上坪", "黄岩", "竹田", "菖蒲", "松山", "雷家", "易家", "舒家", "谢家", "田家", "向家", "黄土坡",
    "牛皮冲", "白马", "仙人", "华兴", "创业", "物流", "商贸", "顺兴", "恒安", "同心", "宏业", "福田",
    "泰安", "庆丰", "丰收", "长青", "凤鸣", "雅园", "太阳坪", "贺家田", "凉亭坳", "黄金坳", "火车站",
    "工业", "园艺", "杉木", "茶园", "麻阳", "芷江", "溆浦", "辰溪", "会同", "靖州",
)
_URBAN_COMMUNITY_STEMS = (
    "迎丰", "太平桥", "天星", "锦溪", "舞水", "鹤鸣", "红星", "府星", "顺天", "湖天", "榆市", "钟坡",
    "盈口", "杨村", "石门", "正清", "凉亭坳", "黄金坳", "贺家田", "红旗", "人民", "东街", "西街",
    "北街", "南街", "新街", "中街", "火车站", "沿河", "河西", "城东", "迎宾", "东兴", "金海", "紫荆",
    "桂花", "荷花", "梨园", "芙蓉", "丹桂", "银杏", "香樟", "枫林", "松林", "竹园", "梅园", "兰亭",
    "凤凰", "龙泉", "玉泉", "清泉", "白沙", "青山", "翠屏", "锦绣", "怀东", "怀北", "新建", "建设",
    "团结", "和平", "解放", "友谊", "文化", "学院", "书院", "育才", "光明", "幸福", "康宁", "安居",
    "长乐", "永安", "太阳坪", "鹤洲", "金桥", "东风", "五一", "三角坪", "四方坪", "高堰", "马路口",
    "坪坡", "大塘", "荷塘", "下坪", "上坪", "宏宇", "华兴", "兴业", "创业", "科技", "顺兴", "恒安",
    "同心", "振兴", "福田", "泰安", "庆丰", "长青", "凤鸣", "雅园", "金星", "银湾", "花溪", "铁北",
    "湖滨", "锦园", "明珠", "春晖", "朝阳", "南苑", "北苑", "东苑", "西苑", "嘉禾", "盛世", "御景",
)
_RURAL_COMMUNITY_STEMS = (
    "舒家", "谢家", "田家", "向家", "杨家", "蒋家", "姚家", "邓家", "曾家", "唐家", "何家", "胡家",
    "粟家", "雷家", "易家", "黄土坡", "牛皮冲", "白马", "仙人", "竹田", "菖蒲", "松山", "黄岩",
    "湾塘", "岩门", "荆坪", "桐木", "铜湾", "新路", "大松坡", "桃花", "石宝", "龙场", "溪口",
)
_NUMERALS = "一二三四五六七八九"


# Components sampled along the roads (besides lights, signals and name plates), with their
# relative frequencies on arterials and on secondary roads.
_ALONG_ROADS: dict[str, tuple[float, float]] = {
    "01001": (10, 9),  # 供水井盖
    "01002": (12, 12),  # 污水井盖
    "01003": (12, 11),  # 雨水井盖
    "01004": (16, 13),  # 雨水箅子
    "01005": (8, 5),  # 电力井盖
    "01006": (5, 0),  # 路灯井盖
    "01007": (8, 6),  # 通信井盖
    "01011": (4, 4),  # 燃气井盖
    "01013": (4, 3),  # 消防设施
    "01030": (0, 8),  # 电力立杆: overhead lines only survive in side streets
    "01048": (1.5, 1.5),  # 变压器（箱）
    "01060": (1.5, 0),  # 路灯配电箱
    "02004": (3, 0),  # 公交站设施
    "02017": (4, 0),  # 交通护栏
    "03001": (0.6, 0.4),  # 公共厕所
    "03005": (6, 5),  # 垃圾箱
    "04002": (10, 6),  # 行道树
}


class _Projection:
    """EPSG:4490 ↔ EPSG:4546 that returns remembered lon/lat vertices exactly."""

    def __init__(self) -> None:
        self._exact: dict[tuple[float, float], tuple[float, float]] = {}

    def to_metric(self, geom: BaseGeometry) -> BaseGeometry:
        """Project lon/lat to metres and remember every vertex for the way back."""

        def forward(ll: np.ndarray) -> np.ndarray:
            x, y = _TO_METRIC.transform(ll[:, 0], ll[:, 1])
            keys = zip(x.tolist(), y.tolist(), strict=True)
            self._exact.update(zip(keys, map(tuple, ll.tolist()), strict=True))
            return np.column_stack([x, y])

        return shapely.transform(geom, forward)

    def _back(self, xy: np.ndarray) -> np.ndarray:
        lon, lat = _TO_LONLAT.transform(xy[:, 0], xy[:, 1])
        out = np.column_stack([lon, lat])
        for i, key in enumerate(zip(xy[:, 0].tolist(), xy[:, 1].tolist(), strict=True)):
            exact = self._exact.get(key)
            if exact is not None:
                out[i] = exact
        return out

    def to_lonlat(self, geoms: Sequence[BaseGeometry]) -> list[BaseGeometry]:
        return list(shapely.transform(np.asarray(geoms, dtype=object), self._back))


# --- geometry helpers -----------------------------------------------------------------------


def _polygons(geom: BaseGeometry) -> list[Polygon]:
    return [g for g in shapely.get_parts(geom) if isinstance(g, Polygon) and not g.is_empty]


def _lines(geom: BaseGeometry) -> list[LineString]:
    out: list[LineString] = []
    for g in shapely.get_parts(geom):
        if isinstance(g, LineString):
            out.append(g)
        elif isinstance(g, MultiLineString | shapely.GeometryCollection):
            out.extend(_lines(g))
    return out


def _extended(line: LineString, by: float = _EXTEND) -> LineString:
    """The line lengthened at both ends along its end segments."""
    xy = np.asarray(line.coords)
    for end, nxt in ((0, 1), (-1, -2)):
        d = xy[end] - xy[nxt]
        xy[end] = xy[end] + d / np.hypot(*d) * by
    return LineString(xy)


def _faces(lines: Iterable[BaseGeometry], inside: BaseGeometry) -> list[Polygon]:
    """The faces of the noded line arrangement that lie inside ``inside``."""
    faces = list(polygonize(unary_union(list(lines))))
    shapely.prepare(inside)
    points = shapely.point_on_surface(np.asarray(faces, dtype=object))
    return [f for f, keep in zip(faces, shapely.contains(inside, points), strict=True) if keep]


def _owners(parts: Sequence[Polygon], wholes: Sequence[Polygon]) -> list[int]:
    """For each face of a finer arrangement, the face of the coarser one it lies in."""
    points = shapely.point_on_surface(np.asarray(parts, dtype=object))
    hit, whole = STRtree(np.asarray(wholes, dtype=object)).query(points, predicate="intersects")
    owner: dict[int, int] = {}
    for h, w in zip(hit.tolist(), whole.tolist(), strict=True):
        owner.setdefault(h, w)  # dust on an edge touches two: either will do
    return [owner[i] for i in range(len(parts))]


def _axes(poly: Polygon) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Long-axis unit vector, its normal, long and short side of the minimum rectangle."""
    xy = np.asarray(shapely.minimum_rotated_rectangle(poly).exterior.coords)
    e0, e1 = xy[1] - xy[0], xy[2] - xy[1]
    l0, l1 = float(np.hypot(*e0)), float(np.hypot(*e1))
    d = e0 / l0 if l0 >= l1 else e1 / l1
    return d, np.array([-d[1], d[0]]), max(l0, l1), min(l0, l1)


def _cut_offset(poly: Polygon, d: np.ndarray, share: float) -> float:
    """The offset s along unit vector ``d`` where {x·d < s} holds ``share`` of the area.

    The cross-section length is piecewise linear between vertices, so the area left of s is
    piecewise quadratic and can be inverted exactly.
    """
    n = np.array([-d[1], d[0]])
    poly = orient(poly, 1.0)
    u0s, u1s, v0s, v1s = [], [], [], []
    for ring in (poly.exterior, *poly.interiors):
        xy = np.asarray(ring.coords)
        u, v = xy @ d, xy @ n
        u0s.append(u[:-1])
        u1s.append(u[1:])
        v0s.append(v[:-1])
        v1s.append(v[1:])
    u0, u1, v0, v1 = (np.concatenate(a) for a in (u0s, u1s, v0s, v1s))
    keep = u0 != u1
    u0, u1, v0, v1 = u0[keep], u1[keep], v0[keep], v1[keep]
    k = (v1 - v0) / (u1 - u0)
    sign = -np.sign(u1 - u0)  # CCW exterior: edges running backwards are the upper side
    b = np.unique(np.concatenate([u0, u1]))
    mid, width = (b[:-1] + b[1:]) / 2, np.diff(b)
    span = (np.minimum(u0, u1)[:, None] < mid) & (mid < np.maximum(u0, u1)[:, None])
    v_mid = v0[:, None] + (mid - u0[:, None]) * k[:, None]
    length = np.where(span, sign[:, None] * v_mid, 0.0).sum(axis=0)
    slope = np.where(span, (sign * k)[:, None], 0.0).sum(axis=0)
    cum = np.concatenate([[0.0], np.cumsum(width * length)])
    target = share * cum[-1]
    j = int(np.clip(np.searchsorted(cum, target, side="right") - 1, 0, len(width) - 1))
    rest = target - cum[j]
    start = length[j] - slope[j] * width[j] / 2
    root = np.sqrt(max(start * start + 2 * slope[j] * rest, 0.0))
    tau = 2 * rest / (start + root) if start + root > 0 else 0.0
    return float(b[j] + min(tau, width[j]))


def _cut_lines(block: Polygon, rng: np.random.Generator) -> list[LineString]:
    """Cut lines that split ``block`` into pieces of about TARGET_GRID, at most MAX_PIECE.

    Each piece is cut across its long axis near an area quantile, so a deep block ends up as
    two rows of grids back to back and a shallow one as a single row; the cut wanders by up to
    a quarter grid because real grids follow walls and entrances, not arithmetic.
    """
    cuts: list[LineString] = []
    stack = [block]
    while stack:
        piece = stack.pop()
        area = piece.area
        if area <= MAX_PIECE:
            continue
        d, n, _, _ = _axes(piece)
        parts = max(2, round(area / TARGET_GRID))
        s = _cut_offset(piece, d, (parts // 2 + rng.uniform(-0.25, 0.25)) / parts)
        c = np.asarray(piece.centroid.coords[0])
        reach = 2 * float(np.hypot(*np.subtract(piece.bounds[2:], piece.bounds[:2]))) + 10
        foot = c + (s - c @ d) * d
        cut = LineString([foot - reach * n, foot + reach * n])
        cuts.extend(_extended(seg) for seg in _lines(piece.intersection(cut)))
        for sign in (-1.0, 1.0):
            half = Polygon([foot - reach * n, foot + reach * n,
                            foot + reach * n + sign * reach * d, foot - reach * n + sign * reach * d])
            stack.extend(_polygons(piece.intersection(half)))
    return cuts


def _shared_lengths(geoms: Sequence[Polygon]) -> dict[tuple[int, int], float]:
    """Length of the common boundary of every pair (i < j) of touching polygons."""
    arr = np.asarray(geoms, dtype=object)
    a, b = STRtree(arr).query(arr, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    lengths = shapely.length(shapely.intersection(shapely.boundary(arr[a]), shapely.boundary(arr[b])))
    return {(int(i), int(j)): float(x) for i, j, x in zip(a, b, lengths, strict=True) if x > 1.0}


def _neighbours(n: int, shared: Mapping[tuple[int, int], float]) -> list[dict[int, float]]:
    out: list[dict[int, float]] = [{} for _ in range(n)]
    for (i, j), length in shared.items():
        out[i][j] = out[j][i] = length
    return out


# --- grouping -------------------------------------------------------------------------------


def _glue(areas: Sequence[float], nbrs: Sequence[Mapping[int, float]], small: float) -> list[int]:
    """Attach each unit smaller than ``small`` to its longest-bordering neighbour.

    Returns the root of each unit; roots are the grouping units, so that a sliver never ends
    up alone in a street or community.
    """
    parent = list(range(len(areas)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in sorted(range(len(areas)), key=lambda i: (areas[i], i)):
        if areas[i] >= small:
            continue
        options = [(length, -j) for j, length in nbrs[i].items()]
        if options:
            j = -max(options)[1]
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[ri] = rj
    return [root(i) for i in range(len(areas))]


def _partition(
    xy: np.ndarray, weight: np.ndarray, nbrs: Sequence[Mapping[int, float]], k: int,
    rng: np.random.Generator,
) -> list[int]:
    """Split units into ``k`` contiguous groups of similar weight.

    Seeds come from a weighted k-means of the centroids; groups then grow along shared
    borders, the lightest group taking its nearest free neighbour, which keeps them compact,
    contiguous and balanced.
    """
    n = len(xy)
    k = min(k, n)
    centres = xy[rng.choice(n, size=k, replace=False, p=weight / weight.sum())]
    for _ in range(25):
        label = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        for c in range(k):
            if (label == c).any():
                w = weight[label == c]
                centres[c] = (xy[label == c] * w[:, None]).sum(0) / w.sum()
    labels = [-1] * n
    load = np.zeros(k)
    for c in range(k):
        dist = ((xy - centres[c]) ** 2).sum(1)
        dist[[i for i in range(n) if labels[i] >= 0]] = np.inf
        seed = int(np.argmin(dist))
        labels[seed] = c
        load[c] = weight[seed]
    free = n - k
    while free:
        for c in np.argsort(load, kind="stable"):
            frontier = sorted({j for i in range(n) if labels[i] == c for j in nbrs[i]
                               if labels[j] < 0})
            if frontier:
                j = min(frontier, key=lambda j: (((xy[j] - centres[c]) ** 2).sum(), j))
                labels[j] = int(c)
                load[c] += weight[j]
                free -= 1
                break
        else:  # units cut off from every group join the nearest centre
            for i in range(n):
                if labels[i] < 0:
                    labels[i] = int(np.argmin(((centres - xy[i]) ** 2).sum(1)))
            free = 0
    return labels


def _group(polys: Sequence[Polygon], k: int, small: float, rng: np.random.Generator) -> list[int]:
    """Group polygons into ``k`` contiguous groups; slivers follow their neighbours."""
    nbrs = _neighbours(len(polys), _shared_lengths(polys))
    areas = [p.area for p in polys]
    roots = _glue(areas, nbrs, small)
    units = sorted(set(roots))
    index = {r: u for u, r in enumerate(units)}
    weight = np.zeros(len(units))
    xy = np.zeros((len(units), 2))
    unit_nbrs: list[dict[int, float]] = [{} for _ in units]
    for i, r in enumerate(roots):
        u = index[r]
        weight[u] += areas[i]
        xy[u] += np.asarray(polys[i].centroid.coords[0]) * areas[i]
        for j, length in nbrs[i].items():
            v = index[roots[j]]
            if v != u:
                unit_nbrs[u][v] = unit_nbrs[u].get(v, 0.0) + length
    xy /= weight[:, None]
    labels = _partition(xy, weight, unit_nbrs, k, rng)
    return [labels[index[r]] for r in roots]


# --- roads ----------------------------------------------------------------------------------


@dataclass
class _Road:
    kind: str
    line: BaseGeometry  # clipped centre-line, metres
    noding: list[LineString]  # what enters the arrangement
    vertical: bool = False  # arterial running roughly north-south


def _arterials(outline: Polygon, rng: np.random.Generator) -> tuple[list[_Road], float]:
    """Gently bending arterials 600–1,000 m apart in a frame turned by a few degrees."""
    angle = np.radians(rng.uniform(2.0, 6.0) * rng.choice([-1.0, 1.0]))
    ex = np.array([np.cos(angle), np.sin(angle)])
    ey = np.array([-ex[1], ex[0]])
    c = np.asarray(outline.centroid.coords[0])
    local = (shapely.get_coordinates(outline) - c) @ np.column_stack([ex, ey])
    lo, hi = local.min(0), local.max(0)
    roads: list[_Road] = []
    for axis, vertical in ((0, True), (1, False)):
        along, across = (1, 0) if vertical else (0, 1)
        pos = lo[axis] + rng.uniform(300.0, 550.0)
        while pos < hi[axis] - 300.0:
            t = np.arange(lo[along] - 400.0, hi[along] + 400.0, 380.0)
            t = t + rng.uniform(-60.0, 60.0, t.size)
            bend = rng.uniform(15.0, 55.0) * np.sin(
                2 * np.pi * t / rng.uniform(2500.0, 6000.0) + rng.uniform(0, 2 * np.pi))
            offset = pos + bend + rng.normal(0.0, 8.0, t.size)
            pts = np.zeros((t.size, 2))
            pts[:, along], pts[:, across] = t, offset
            full = LineString(c + pts[:, :1] * ex + pts[:, 1:] * ey)
            parts = _lines(full.intersection(outline))
            if sum(p.length for p in parts) > 200.0:
                clipped = parts[0] if len(parts) == 1 else MultiLineString(parts)
                roads.append(_Road("arterial", clipped, [full], vertical))
            pos += rng.uniform(600.0, 1000.0)
    return roads, float(angle)


def _secondaries(superblock: Polygon, rng: np.random.Generator) -> list[_Road]:
    """1–3 roads across a superblock at its own orientation, and sometimes a lane along it."""
    if superblock.area < 60_000.0:
        return []
    d, n, long_side, short_side = _axes(superblock)
    count = int(np.clip(round(long_side / 320.0) - 1, 1, 3))
    c = np.asarray(shapely.minimum_rotated_rectangle(superblock).centroid.coords[0])
    reach = long_side + short_side
    roads: list[_Road] = []
    for i in range(count):
        s = long_side * ((i + 1) / (count + 1) - 0.5 + rng.uniform(-0.07, 0.07) / (count + 1) * 2)
        tilt = np.radians(rng.uniform(-6.0, 6.0))
        m = n * np.cos(tilt) + d * np.sin(tilt)
        foot = c + s * d
        parts = [p for p in _lines(superblock.intersection(
            LineString([foot - reach * m, foot + reach * m]))) if p.length > 60.0]
        if parts:
            line = parts[0] if len(parts) == 1 else MultiLineString(parts)
            roads.append(_Road("secondary", line, [_extended(p) for p in parts]))
    if short_side > 420.0 and roads:
        # A lane along the superblock inside one strip between crossing roads: T-junctions.
        strips = _faces([superblock.boundary, *(x for r in roads for x in r.noding)], superblock)
        for strip in strips:
            if strip.area < 80_000.0 or rng.random() > 0.45:
                continue
            sc = np.asarray(strip.point_on_surface().coords[0])
            lane = LineString([sc - reach * d, sc + reach * d])
            parts = [p for p in _lines(strip.intersection(lane)) if p.length > 80.0]
            if parts:
                p = max(parts, key=lambda p: p.length)
                roads.append(_Road("secondary", p, [_extended(p)]))
    return roads


# --- one management area --------------------------------------------------------------------


@dataclass
class _AreaLayout:
    outline: Polygon | MultiPolygon
    angle: float
    roads: list[_Road]
    street_of_block: list[int]
    community_of_block: list[int]  # index within its street
    blocks: list[Polygon]
    grids: list[Polygon]
    grid_block: list[int]


def _layout(outline: Polygon | MultiPolygon, spec: _AreaSpec, rng: np.random.Generator) -> _AreaLayout:
    arterials, angle = _arterials(outline, rng)
    boundary = outline.boundary
    superblocks = _faces([boundary, *(x for r in arterials for x in r.noding)], outline)
    secondaries = [r for sb in superblocks for r in _secondaries(sb, rng)]
    roads = arterials + secondaries
    road_lines = [boundary, *(x for r in roads for x in r.noding)]
    blocks = _faces(road_lines, outline)

    street_of_sb = _group(superblocks, len(spec.streets), 80_000.0, rng)
    street_of_block = [street_of_sb[s] for s in _owners(blocks, superblocks)]
    community_of_block = [0] * len(blocks)
    for street in range(len(spec.streets)):
        members = [i for i, s in enumerate(street_of_block) if s == street]
        polys = [blocks[i] for i in members]
        k = max(1, round(sum(p.area for p in polys) / COMMUNITY_TARGET))
        labels = _group(polys, k, 20_000.0, rng)
        for i, label in zip(members, labels, strict=True):
            community_of_block[i] = label

    cuts = [c for b in blocks for c in _cut_lines(b, rng)]
    faces = _faces(road_lines + cuts, outline)
    face_block = _owners(faces, blocks)
    key = [(street_of_block[b], community_of_block[b]) for b in face_block]
    grids, grid_block = _merge_small(faces, key, face_block)
    return _AreaLayout(outline, angle, roads, street_of_block, community_of_block, blocks,
                       grids, grid_block)


def _merge_small(
    faces: list[Polygon], key: list[tuple[int, int]], block: list[int],
) -> tuple[list[Polygon], list[int]]:
    """Merge pieces under MIN_PIECE into the same-community neighbour with the longest border.

    Numerical dust (under 1 m², left where an overshooting cut line met an edge) may join any
    neighbour: it is no territory worth a community boundary.
    """
    geoms: list[Polygon | None] = list(faces)
    while True:
        alive = [i for i, g in enumerate(geoms) if g is not None]
        small = sorted((i for i in alive if geoms[i].area < MIN_PIECE),
                       key=lambda i: (geoms[i].area, i))
        tree = STRtree([geoms[i] for i in alive])
        touched: set[int] = set()
        for i in small:
            if i in touched:
                continue
            gi = geoms[i]
            options = []
            for j in (alive[t] for t in tree.query(gi, predicate="intersects")):
                if j == i or j in touched or (key[j] != key[i] and gi.area >= 1.0):
                    continue
                shared = shapely.intersection(gi.boundary, geoms[j].boundary).length
                if shared > 0.0 and gi.area + geoms[j].area <= GRID_BOUNDS[1]:
                    options.append((key[j] == key[i], shared, -j))
            if not options:
                continue
            j = -max(options)[2]
            merged = shapely.coverage_union(gi, geoms[j])
            if isinstance(merged, Polygon):
                geoms[j], geoms[i] = merged, None
                touched.update((i, j))
        if not touched:
            break
    keep = [i for i, g in enumerate(geoms) if g is not None]
    return [geoms[i] for i in keep], [block[i] for i in keep]


# --- names ----------------------------------------------------------------------------------


def _numeral(n: int) -> str:
    """Chinese numeral for 1–99."""
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else _NUMERALS[tens - 1] + "十")
    return head + (_NUMERALS[ones - 1] if ones else "")


class _Namer:
    """Plausible, unique names drawn from shuffled stem pools."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.urban = self._shuffled(_URBAN_COMMUNITY_STEMS)
        self.rural = self._shuffled(_RURAL_COMMUNITY_STEMS)

    def _shuffled(self, stems: Sequence[str]) -> list[str]:
        return [stems[i] for i in self.rng.permutation(len(stems))]

    def community(self, rural: bool) -> str:
        pool, suffix = (self.rural, "村") if rural else (self.urban, "社区")
        for name in (stem + suffix for stem in pool):
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("demo community name pool exhausted")

    def roads(self, roads: Sequence[_Road], offset: np.ndarray) -> list[str]:
        """Names for one area's roads, unique in the area and where possible in the city.

        ``offset`` is the area's position (m) from the old town: a road south of it is a
        …南路, one west of it a …西路, as road sections are named in Chinese cities.
        """
        names: list[str] = []
        taken: set[str] = set()

        def take(candidates: Iterable[str]) -> str:
            fresh = [c for c in candidates if c not in taken]
            name = next((c for c in fresh if c not in self.used), fresh[0])
            taken.add(name)
            self.used.add(name)
            return name

        arterial_stems = self._shuffled(_ARTERIAL_STEMS)
        secondary_stems = self._shuffled(_SECONDARY_STEMS)
        lanes: dict[int, int] = {}
        arterials = [(i, r) for i, r in enumerate(roads) if r.kind == "arterial"]
        for road in roads:
            if road.kind == "arterial":
                along = offset[1] if road.vertical else offset[0]
                side = ("北", "南") if road.vertical else ("东", "西")
                draw = self.rng.random()
                suffix = ("大道" if draw < 0.1 else "路" if draw < 0.6
                          else "中路" if abs(along) < 1500 else side[0 if along > 0 else 1] + "路")
                stem = next((st for st in arterial_stems if st + suffix not in self.used),
                            arterial_stems[0])
                arterial_stems.remove(stem)
                names.append(take([stem + suffix]))
            elif self.rng.random() < 0.35 or not secondary_stems:
                # A 巷 takes the name of the nearest arterial, e.g. 人民南路三巷.
                a = min(arterials, key=lambda ir: ir[1].line.distance(road.line))[0]
                lanes[a] = lanes.get(a, 0) + 1
                while f"{names[a]}{_numeral(lanes[a])}巷" in taken:
                    lanes[a] += 1
                names.append(take([f"{names[a]}{_numeral(lanes[a])}巷"]))
            else:
                suffix = ("路", "街", "巷")[int(self.rng.choice(3, p=[0.55, 0.3, 0.15]))]
                stem = secondary_stems.pop()
                names.append(take([stem + suffix, stem + "路", stem + "街", stem + "巷"]))
        return names


def _street_order(centroids: np.ndarray, centre: np.ndarray, hints: Sequence[str]) -> list[int]:
    """Which group gets each street name, by where the name says it lies."""
    left = list(range(len(centroids)))
    order: list[int] = []
    score: dict[str, Callable[[int], float]] = {
        "centre": lambda g: -float(np.hypot(*(centroids[g] - centre))),
        "north": lambda g: centroids[g][1], "south": lambda g: -centroids[g][1],
        "east": lambda g: centroids[g][0], "west": lambda g: -centroids[g][0],
    }
    for hint in hints:
        if hint:
            g = max(left, key=lambda g: (score[hint](g), -g))
        else:
            g = left[reading_order([tuple(centroids[g]) for g in left], 1500.0)[0]]
        left.remove(g)
        order.append(g)
    return order


# --- components -----------------------------------------------------------------------------


def _along(
    line: LineString, spacing: float, rng: np.random.Generator, jitter: float, start: float,
    alternate: bool,
) -> list[tuple[float, float]]:
    """Points along ``line`` every ``spacing`` (± jitter), set 2–8 m to one side."""
    s = np.arange(start, line.length, spacing)
    s = np.clip(s + rng.uniform(-jitter, jitter, s.size) * spacing, 0.5, line.length - 0.5)
    if s.size == 0:
        return []
    p = shapely.get_coordinates(shapely.line_interpolate_point(line, s))
    a = shapely.get_coordinates(shapely.line_interpolate_point(line, s - 0.5))
    b = shapely.get_coordinates(shapely.line_interpolate_point(line, s + 0.5))
    t = (b - a) / np.maximum(np.hypot(*(b - a).T), 1e-9)[:, None]
    normal = np.column_stack([-t[:, 1], t[:, 0]])
    side = (np.where(np.arange(s.size) % 2 == 0, 1.0, -1.0) if alternate
            else rng.choice([-1.0, 1.0], s.size))
    dist = rng.uniform(2.0, 8.0, s.size) * side
    return [tuple(q) for q in (p + normal * dist[:, None]).tolist()]


def _component_sites(
    layouts: Sequence[_AreaLayout], centre_box: Polygon, rng: np.random.Generator,
) -> list[tuple[int, str, tuple[float, float]]]:
    """(area index, class code, metric point) of every component, in a stable order."""
    sites: list[tuple[int, str, tuple[float, float]]] = []
    for a, lay in enumerate(layouts):
        arterials = [r for r in lay.roads if r.kind == "arterial"]
        for r in arterials:
            for part in _lines(r.line.intersection(centre_box)):
                sites += [(a, "01037", p) for p in _along(part, LIGHT_SPACING, rng, 0.1, 10.0, True)]
        diag = np.array([np.cos(lay.angle + np.pi / 4), np.sin(lay.angle + np.pi / 4)])
        anti = np.array([-diag[1], diag[0]])
        for v in (r for r in arterials if r.vertical):
            for h in (r for r in arterials if not r.vertical):
                for x in shapely.get_parts(v.line.intersection(h.line)):
                    if not isinstance(x, Point):
                        continue
                    c = np.asarray(x.coords[0])
                    sites += [(a, "02014", tuple(c + 10.0 * diag)), (a, "02014", tuple(c - 10.0 * diag)),
                              (a, "02012", tuple(c + 9.0 * anti))]
    fixed = len(sites)
    lines = [(a, r.kind, p) for a, lay in enumerate(layouts) for r in lay.roads for p in _lines(r.line)]
    spacing = sum(p.length for _, _, p in lines) / max(COMPONENT_TARGET - fixed, 1)
    codes = list(_ALONG_ROADS)
    weights = {kind: np.array([_ALONG_ROADS[c][k] for c in codes]) for k, kind
               in enumerate(("arterial", "secondary"))}
    for a, kind, line in lines:
        points = _along(line, spacing, rng, 0.4, rng.uniform(0, spacing), False)
        classes = rng.choice(len(codes), size=len(points), p=weights[kind] / weights[kind].sum())
        sites += [(a, codes[c], p) for c, p in zip(classes, points, strict=True)]
    return sites


# --- assembly -------------------------------------------------------------------------------


def _densified(geom: BaseGeometry, step: float = _DENSIFY) -> MultiPolygon:
    """Polygons with extra vertices on every edge longer than ``step`` degrees.

    An intermediate vertex does not depend on the direction in which its edge is run, so two
    outlines that share an edge (鹤城区 and 中方县) still share all its vertices.
    """

    def ring(coords: Sequence[tuple[float, float]]) -> np.ndarray:
        xy = np.asarray(coords)
        out = [xy[:1]]
        for p, q in pairwise(xy):
            forward = tuple(p) <= tuple(q)
            a, b = (p, q) if forward else (q, p)
            t = np.linspace(0.0, 1.0, int(np.ceil(np.hypot(*(q - p)) / step)) + 1)[1:-1]
            inner = a + t[:, None] * (b - a)
            out += [inner if forward else inner[::-1], q[None]]
        return np.concatenate(out)

    return MultiPolygon([Polygon(ring(p.exterior.coords), [ring(h.coords) for h in p.interiors])
                         for p in _polygons(geom)])


def _dense_box(bbox: tuple[float, float, float, float], step: float = _DENSIFY) -> Polygon:
    """The lon/lat box with a vertex every ``step`` degrees on a common lattice, so that two
    boxes sharing an edge share its vertices too."""
    x0, y0, x1, y1 = bbox

    def ticks(a: float, b: float) -> list[float]:
        n = round((b - a) / step)
        return [round(a + i * (b - a) / n, 6) for i in range(n + 1)]

    xs, ys = ticks(x0, x1), ticks(y0, y1)
    ring = ([(x, y0) for x in xs] + [(x1, y) for y in ys[1:]]
            + [(x, y1) for x in reversed(xs[:-1])] + [(x0, y) for y in reversed(ys[1:-1])])
    return Polygon(ring)


def _multi(geom: BaseGeometry) -> MultiPolygon:
    return MultiPolygon(_polygons(geom))


def _regions(
    spec: _AreaSpec, lay: _AreaLayout, proj: _Projection, namer: _Namer, first_street: int,
) -> tuple[DemoArea, list[DemoRegion], list[DemoRegion], list[DemoGrid]]:
    """Codes, names and lon/lat geometry of one area's streets, communities and grids.

    Streets are numbered from ``first_street`` in the order of the area's street names,
    communities north→south, west→east in 500 m bands, grids likewise in 100 m bands.
    """
    centre = np.asarray(lay.outline.centroid.coords[0])
    centroids = np.array([
        unary_union([b for b, s in zip(lay.blocks, lay.street_of_block, strict=True) if s == k])
        .centroid.coords[0] for k in range(len(spec.streets))])
    order = _street_order(centroids, centre, [hint for _, hint in spec.streets])
    grids_ll = proj.to_lonlat(lay.grids)
    by_community: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(lay.grid_block):
        by_community.setdefault((lay.street_of_block[b], lay.community_of_block[b]), []).append(i)

    streets: list[DemoRegion] = []
    communities: list[DemoRegion] = []
    grids: list[DemoGrid] = []
    for number, ((street_name, _), g) in enumerate(zip(spec.streets, order, strict=True)):
        street_code = f"{spec.county_code}{first_street + number:03d}"
        keys = sorted(k for k in by_community if k[0] == g)
        cents = [unary_union([lay.grids[i] for i in by_community[k]]).centroid.coords[0]
                 for k in keys]
        # In a town (镇) the communities round its centre are 社区, the outlying ones 村.
        near = sorted(range(len(keys)), key=lambda i: (float(np.hypot(*(cents[i] - centroids[g]))), i))
        parts: list[BaseGeometry] = []
        for seq, idx in enumerate(reading_order(cents, 500.0), start=1):
            members = by_community[keys[idx]]
            code = f"{street_code}{seq:03d}"
            if len(members) > 999:
                raise RuntimeError(f"community {code} has {len(members)} grids")
            numbering = reading_order([lay.grids[i].centroid.coords[0] for i in members], 100.0)
            for n, m in enumerate(numbering, start=1):
                i = members[m]
                grids.append(DemoGrid(build_grid(code, n), code, spec.code, grids_ll[i],
                                      lay.grids[i].area))
            geom = shapely.coverage_union_all([grids_ll[i] for i in members])
            parts.append(geom)
            rural = spec.villages and near.index(idx) >= 2
            communities.append(DemoRegion(code, namer.community(rural), "community", street_code,
                                          spec.code, _multi(geom)))
        streets.append(DemoRegion(street_code, street_name, "street", spec.county_code, spec.code,
                                  _multi(shapely.coverage_union_all(parts))))
    area = DemoArea(spec.code, spec.name, spec.full_name, spec.county_code,
                    _multi(shapely.coverage_union_all([s.geom for s in streets])))
    return area, streets, communities, grids


def generate(counties: Mapping[str, BaseGeometry], seed: int = 4312) -> DemoCity:
    """Generate the demo geography inside the real county outlines (lon/lat, EPSG:4490).

    ``counties`` maps "431202" (鹤城区) and "431221" (中方县) to their outlines. The same
    outlines and seed always give the same city.
    """
    proj = _Projection()
    dense = {code: _densified(geom) for code, geom in counties.items()}
    outlines: dict[str, BaseGeometry] = {}
    layouts: list[_AreaLayout] = []
    for a, spec in enumerate(_AREAS):
        ll = _dense_box(spec.bbox).intersection(dense[spec.county_code])
        if spec.minus:
            ll = ll.difference(outlines[spec.minus])
        outlines[spec.code] = ll
        outline = proj.to_metric(_multi(ll))
        outline = outline.geoms[0] if len(outline.geoms) == 1 else outline
        layouts.append(_layout(outline, spec, np.random.default_rng([seed, a])))

    centre_box = proj.to_metric(box(*CENTRE_BOX))
    old_town = np.asarray(centre_box.centroid.coords[0])
    namer = _Namer(np.random.default_rng([seed, 99]))
    city = DemoCity([], [], [], [], [], [])
    streets_so_far: Counter[str] = Counter()
    for spec, lay in zip(_AREAS, layouts, strict=True):
        area, streets, communities, grids = _regions(
            spec, lay, proj, namer, streets_so_far[spec.county_code] + 1)
        streets_so_far[spec.county_code] += len(streets)
        city.areas.append(area)
        city.streets.extend(streets)
        city.communities.extend(communities)
        city.grids.extend(grids)
        offset = np.asarray(lay.outline.centroid.coords[0]) - old_town
        lines = proj.to_lonlat([r.line for r in lay.roads])
        for name, road, line in zip(namer.roads(lay.roads, offset), lay.roads, lines, strict=True):
            city.roads.append(DemoRoad(name, road.kind, spec.code, line))

    low, high = GRID_BOUNDS
    for g in city.grids:
        if not (isinstance(g.geom, Polygon) and g.geom.is_valid and low <= g.area_m2 <= high):
            raise RuntimeError(f"grid {g.code} breaks the grid rules ({g.area_m2:.0f} m²)")

    sites = _component_sites(layouts, centre_box, np.random.default_rng([seed, 7]))
    points = proj.to_lonlat([Point(p) for _, _, p in sites])
    tree = STRtree(np.asarray([g.geom for g in city.grids], dtype=object))
    hit_point, hit_grid = tree.query(np.asarray(points, dtype=object), predicate="within")
    home = dict(zip(hit_point.tolist(), hit_grid.tolist(), strict=True))
    serials: Counter[tuple[str, str]] = Counter()
    for p, ((a, class_code, _), point) in enumerate(zip(sites, points, strict=True)):
        grid = city.grids[home[p]] if p in home else None
        # A point set off the road across the area's edge would sit in another area: skip it.
        if grid is None or grid.area_code != _AREAS[a].code:
            continue
        county = _AREAS[a].county_code
        serials[(county, class_code)] += 1
        code = build_component(county, class_code, serials[(county, class_code)])
        city.components.append(DemoComponent(code, class_code, point, grid.code))

    city.streets.sort(key=lambda r: r.code)
    city.communities.sort(key=lambda r: r.code)
    city.grids.sort(key=lambda g: g.code)
    city.components.sort(key=lambda c: c.code)
    return city
