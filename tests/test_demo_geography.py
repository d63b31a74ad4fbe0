"""The generated Huaihua demo geography (grids.demo), checked without a database."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely import STRtree
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from geo.boundaries import county_outlines
from grids import demo
from grids.codes import parse_grid, reading_order, validate_component, validate_region

AREA_COUNTY = {"HC": "431202", "JK": "431202", "GX": "431221", "ZF": "431221"}
# Where each management area must lie: the specified boxes, give or take 0.001°.
AREA_BOXES = {
    "HC": (109.97, 27.51, 110.03, 27.57),
    "JK": (109.98, 27.465, 110.04, 27.51),
    "GX": (109.965, 27.43, 110.03, 27.48),
    "ZF": (109.93, 27.40, 109.965, 27.45),
}
COMPONENT_CLASSES = {
    "01001",
    "01002",
    "01003",
    "01004",
    "01005",
    "01006",
    "01007",
    "01011",
    "01013",
    "01030",
    "01037",
    "01048",
    "01060",
    "02004",
    "02012",
    "02014",
    "02017",
    "03001",
    "03005",
    "04002",
}
_TO_METRIC = Transformer.from_crs("EPSG:4490", "EPSG:4546", always_xy=True)


def metric(geom: BaseGeometry) -> BaseGeometry:
    """EPSG:4490 lon/lat → EPSG:4546 metres (x = easting)."""
    return shapely.transform(geom, lambda c: np.column_stack(_TO_METRIC.transform(c[:, 0], c[:, 1])))


@pytest.fixture(scope="module")
def counties() -> dict[str, BaseGeometry]:
    return {code: outline for code, (_, outline) in county_outlines().items()}


@pytest.fixture(scope="module")
def run(counties: dict[str, BaseGeometry]) -> tuple[demo.DemoCity, float]:
    started = time.perf_counter()
    city = demo.generate(counties)
    return city, time.perf_counter() - started


@pytest.fixture(scope="module")
def city(run: tuple[demo.DemoCity, float]) -> demo.DemoCity:
    return run[0]


@pytest.fixture(scope="module")
def grids_m(city: demo.DemoCity) -> list[Polygon]:
    return [metric(g.geom) for g in city.grids]


def test_fast_enough(run: tuple[demo.DemoCity, float]) -> None:
    # The budget is ~20 s on 2 cores; the slack keeps a busy test machine from failing it.
    assert run[1] < 40.0


def test_areas_streets_and_total(city: demo.DemoCity) -> None:
    assert [a.code for a in city.areas] == ["HC", "JK", "GX", "ZF"]
    assert [a.name for a in city.areas] == ["鹤城区", "经开区", "高新区", "中方县"]
    assert [a.full_name for a in city.areas] == [
        "鹤城区",
        "怀化经济技术开发区",
        "怀化高新技术产业开发区",
        "中方县",
    ]
    assert {a.code: a.county_code for a in city.areas} == AREA_COUNTY
    per_area = Counter(s.area_code for s in city.streets)
    assert per_area == {"HC": 6, "JK": 2, "GX": 2, "ZF": 2}
    total = sum(metric(a.geom).area for a in city.areas) / 1e6
    assert 60.0 <= total <= 150.0
    assert sum(g.area_m2 for g in city.grids) / 1e6 == pytest.approx(total, rel=1e-6)


def test_centre_box_is_covered(city: demo.DemoCity) -> None:
    hc = next(a for a in city.areas if a.code == "HC")
    centre = box(*demo.CENTRE_BOX)
    assert hc.geom.contains(centre)
    hc_grids = shapely.union_all([g.geom for g in city.grids if g.area_code == "HC"])
    assert hc_grids.contains(centre)


def test_areas_inside_their_boxes_and_counties(
    city: demo.DemoCity, counties: dict[str, BaseGeometry]
) -> None:
    for area in city.areas:
        assert area.geom.is_valid
        slack = box(*AREA_BOXES[area.code]).buffer(0.0011, join_style="mitre")
        assert slack.contains(area.geom), area.code
        county = counties[area.county_code]
        assert metric(area.geom.difference(county)).area < 1.0, area.code
        # Within a millimetre of the county, in every vertex.
        assert county.buffer(1e-8).contains(area.geom), area.code
    # 经开区 and 高新区 meet along the real county border.
    jk, gx = (next(a.geom for a in city.areas if a.code == c) for c in ("JK", "GX"))
    assert jk.boundary.intersection(gx.boundary).length > 0.01  # degrees, about 1 km


def test_grid_shape_and_size(city: demo.DemoCity, grids_m: list[Polygon]) -> None:
    low, high = demo.GRID_BOUNDS
    for grid, geom in zip(city.grids, grids_m, strict=True):
        assert isinstance(grid.geom, Polygon) and grid.geom.is_valid, grid.code
        assert low <= geom.area <= high, (grid.code, geom.area)
        assert grid.area_m2 == pytest.approx(geom.area, abs=0.01)
    areas = np.array([g.area for g in grids_m])
    assert 8_000 < np.median(areas) < 12_500


def test_grids_do_not_overlap(grids_m: list[Polygon]) -> None:
    arr = np.asarray(grids_m, dtype=object)
    a, b = STRtree(arr).query(arr, predicate="intersects")
    keep = a < b
    overlap = shapely.area(shapely.intersection(arr[a[keep]], arr[b[keep]]))
    assert overlap.size > len(grids_m)  # neighbours were found at all
    assert overlap.max() < 0.01


def test_unions_equal_outlines(city: demo.DemoCity, grids_m: list[Polygon]) -> None:
    by_parent: dict[str, list[BaseGeometry]] = defaultdict(list)
    for grid, geom in zip(city.grids, grids_m, strict=True):
        by_parent[grid.community_code].append(geom)
    for community in city.communities:
        by_parent[community.parent_code].append(metric(community.geom))
    for street in city.streets:
        by_parent[street.area_code].append(metric(street.geom))
    for region in [*city.communities, *city.streets, *city.areas]:
        outline = metric(region.geom)
        union = shapely.union_all(by_parent[region.code])
        tolerance = max(outline.area / 1e6, 0.01)  # 1 m² per km²
        assert outline.symmetric_difference(union).area < tolerance, region.code
        assert isinstance(region.geom, MultiPolygon) and region.geom.is_valid, region.code


def test_every_grid_in_exactly_one_community(city: demo.DemoCity, grids_m: list[Polygon]) -> None:
    communities = [metric(c.geom) for c in city.communities]
    codes = np.array([c.code for c in city.communities])
    grids = np.asarray(grids_m, dtype=object)
    g, c = STRtree(communities).query(grids, predicate="intersects")
    shared = shapely.area(shapely.intersection(grids[g], np.asarray(communities, dtype=object)[c]))
    inside = shared > 0.01
    hits = Counter(g[inside].tolist())
    assert set(hits.values()) == {1}
    assert len(hits) == len(city.grids)
    for gi, ci in zip(g[inside].tolist(), c[inside].tolist(), strict=True):
        assert codes[ci] == city.grids[gi].community_code


def test_nesting(city: demo.DemoCity) -> None:
    streets = {s.code: s for s in city.streets}
    areas = {a.code: a for a in city.areas}
    for community in city.communities:
        street = streets[community.parent_code]
        assert community.area_code == street.area_code
        assert metric(community.geom.difference(street.geom)).area < 0.01, community.code
        area_m2 = metric(community.geom).area
        assert 0.5e6 < area_m2 < 2.2e6, (community.code, area_m2)
        assert len(community.geom.geoms) == 1, community.code  # contiguous
    for street in city.streets:
        area = areas[street.area_code]
        assert street.parent_code == area.county_code == street.code[:6]
        assert len(street.geom.geoms) == 1, street.code
        assert metric(street.geom.difference(area.geom)).area < 0.01, street.code


def test_codes(city: demo.DemoCity) -> None:
    for street in city.streets:
        assert street.level == "street" and len(street.code) == 9
        validate_region(street.code)
    # Street codes continue per county: 鹤城区's streets first, then 经开区's.
    assert [s.code for s in city.streets if s.area_code == "HC"] == [f"431202{i:03d}" for i in range(1, 7)]
    assert [s.code for s in city.streets if s.area_code == "JK"] == ["431202007", "431202008"]
    assert [s.code for s in city.streets if s.area_code == "GX"] == ["431221001", "431221002"]
    assert [s.code for s in city.streets if s.area_code == "ZF"] == ["431221003", "431221004"]
    by_street: dict[str, list[str]] = defaultdict(list)
    for community in city.communities:
        assert community.level == "community" and len(community.code) == 12
        assert community.code.startswith(community.parent_code)
        validate_region(community.code)
        by_street[community.parent_code].append(community.code)
    for street, codes in by_street.items():
        assert codes == [f"{street}{i:03d}" for i in range(1, len(codes) + 1)]
    grid_codes = [g.code for g in city.grids]
    assert len(set(grid_codes)) == len(grid_codes)
    by_community: dict[str, list[int]] = defaultdict(list)
    areas = {c.code: c.area_code for c in city.communities}
    for grid in city.grids:
        parsed = parse_grid(grid.code)
        assert not parsed.legacy and parsed.community == grid.community_code
        assert grid.area_code == areas[grid.community_code]
        by_community[grid.community_code].append(parsed.sequence)
    assert set(by_community) == set(areas)
    for seqs in by_community.values():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)) and len(seqs) <= 999


def test_names(city: demo.DemoCity) -> None:
    communities = Counter((c.parent_code, c.name) for c in city.communities)
    assert max(communities.values()) == 1  # unique within each street
    assert all(re.fullmatch(r"\w+(社区|村)", c.name) for c in city.communities)
    assert all(re.fullmatch(r"\w+(街道|镇)", s.name) for s in city.streets)
    assert len({s.name for s in city.streets}) == len(city.streets)
    roads = Counter((r.area_code, r.name) for r in city.roads)
    assert max(roads.values()) == 1  # unique within each area
    assert all(re.fullmatch(r"\w+(路|街|巷|大道)", r.name) for r in city.roads)


def test_grids_numbered_west_to_east_north_to_south(city: demo.DemoCity, grids_m: list[Polygon]) -> None:
    by_community: dict[str, list[int]] = defaultdict(list)
    for i, grid in enumerate(city.grids):
        by_community[grid.community_code].append(i)
    for members in by_community.values():
        centroids = [grids_m[i].centroid.coords[0] for i in members]
        assert [members[k] for k in reading_order(centroids, 100.0)] == members
    # Spelled out for one community: 100 m bands from the north, west to east inside a band.
    centroids = [grids_m[i].centroid for i in by_community[city.communities[0].code]]
    top = max(c.y for c in centroids)
    bands = [((top - c.y) // 100.0, c.x) for c in centroids]
    assert bands == sorted(bands) and bands[-1][0] >= 3


def test_roads(city: demo.DemoCity) -> None:
    areas = {a.code: a.geom for a in city.areas}
    kinds = Counter((r.area_code, r.kind) for r in city.roads)
    for code in areas:
        assert kinds[(code, "arterial")] >= 5
        assert kinds[(code, "secondary")] > kinds[(code, "arterial")]
    for road in city.roads:
        assert road.kind in {"arterial", "secondary"}
        assert road.geom.geom_type in {"LineString", "MultiLineString"}, road.name
        assert areas[road.area_code].buffer(1e-7).contains(road.geom), road.name
        assert metric(road.geom).length > 50.0


def test_components(city: demo.DemoCity) -> None:
    grids = {g.code: g for g in city.grids}
    codes = [c.code for c in city.components]
    assert len(set(codes)) == len(codes)
    assert 3_500 <= len(codes) <= 4_500
    serials: dict[tuple[str, str], list[int]] = defaultdict(list)
    for component in city.components:
        validate_component(component.code)
        assert component.code[6:11] == component.class_code
        assert component.class_code in COMPONENT_CLASSES
        grid = grids[component.grid_code]
        assert isinstance(component.geom, Point)
        assert grid.geom.contains(component.geom), component.code
        assert component.code[:6] == grid.code[:6]
        serials[(component.code[:6], component.class_code)].append(int(component.code[11:]))
    for seq in serials.values():
        assert sorted(seq) == list(range(1, len(seq) + 1))
    counts = Counter(c.class_code for c in city.components)
    assert counts.most_common(1)[0][0] == "01037"  # street lights are the most frequent
    assert set(counts) == COMPONENT_CLASSES


def test_components_lie_beside_roads(city: demo.DemoCity) -> None:
    roads = [metric(r.geom) for r in city.roads]
    tree = STRtree(roads)
    points = np.asarray([metric(c.geom) for c in city.components[::20]], dtype=object)
    _, distance = tree.query_nearest(points, return_distance=True, all_matches=False)
    # 2–8 m from their own road; a crossing road may pass closer.
    assert distance.max() < 8.5 and np.median(distance) > 2.0


def test_not_a_lattice(city: demo.DemoCity, grids_m: list[Polygon]) -> None:
    angles = []
    for geom in grids_m[::10]:
        xy = np.asarray(geom.exterior.coords)
        d = np.diff(xy, axis=0)
        angles.extend(np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 90.0)
    off_axis = np.minimum(np.asarray(angles), 90.0 - np.asarray(angles)) > 1.0
    assert off_axis.mean() > 0.5
    areas = np.array([g.area for g in grids_m])
    assert areas.std() / areas.mean() > 0.1
    # Arterials bend: longer than the straight line between their ends.
    arterials = [
        metric(r.geom) for r in city.roads if r.kind == "arterial" and r.geom.geom_type == "LineString"
    ]
    bent = [a for a in arterials if a.length > 1.0005 * Point(a.coords[0]).distance(Point(a.coords[-1]))]
    assert len(bent) > len(arterials) / 2


def test_deterministic(city: demo.DemoCity, counties: dict[str, BaseGeometry]) -> None:
    again = demo.generate(counties)
    assert [g.code for g in again.grids] == [g.code for g in city.grids]
    assert [c.code for c in again.communities] == [c.code for c in city.communities]
    assert [(c.code, c.name) for c in again.communities] == [(c.code, c.name) for c in city.communities]
    assert [(r.name, r.kind) for r in again.roads] == [(r.name, r.kind) for r in city.roads]
    assert [c.code for c in again.components] == [c.code for c in city.components]
    for a, b in zip(again.grids[::97], city.grids[::97], strict=True):
        assert a.geom.wkb == b.geom.wkb
    for a, b in zip(again.components[::53], city.components[::53], strict=True):
        assert (a.geom.wkb, a.grid_code) == (b.geom.wkb, b.grid_code)
    for a, b in zip(again.areas, city.areas, strict=True):
        assert a.geom.wkb == b.geom.wkb
