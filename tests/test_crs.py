"""geo.crs against values published by independent implementations and by geodesy.

Reference values (not produced by this code):

- eviltransform (googollee/eviltransform, the table shared by its Python, Go, C, JS and PHP
  tests): WGS-84 -> GCJ-02 for Shanghai, Shenzhen and Beijing.
- coordtransform (wandergis/coordtransform, the JS library behind coordTransform_py; README
  "result" block) for the input (116.404, 39.915): wgs84togcj02, gcj02tobd09, and the one-step
  inverses bd09togcj02 / gcj02towgs84 (which are approximations, so compared as such).
- GRS80 (= CGCS2000 ellipsoid geometry) quarter meridian 10 001 965.7293 m (Moritz, "Geodetic
  Reference System 1980"); equatorial degree a*pi/180; Web Mercator's defining formulas; the
  transverse Mercator point scale factor k = 1 + x^2 / (2 R^2).
- prcoords 1.0.2 (PyPI, CC0), when installed, on a grid around Huaihua.

eviltransform's BD-09 table (bd 120.019809, 29.199786 -> wgs 120.00877901, 29.19613161 and
one more) is not used: it matches neither eviltransform's own bd2wgs nor prcoords (10-40 m
off), so it does not come from the published formula.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import prcoords  # test-only dependency (PyPI, CC0): an independent implementation
import pytest

from geo import crs
from geo.crs import (
    CRS,
    InvalidCoordinates,
    bd09_to_gcj02,
    bd09_to_gcj02_approx,
    bd09_to_wgs84,
    distance_m,
    from_cgcs2000,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    in_china,
    project,
    spherical_distance_m,
    to_cgcs2000,
    unproject,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from geo.errors import InvalidInput

EXACT = 1e-9  # degrees: same formula, so only floating-point noise may differ

# eviltransform test table: (wgs lat, wgs lon, gcj lat, gcj lon)
EVILTRANSFORM_WGS_GCJ = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]

# coordtransform README, all for the input (lon, lat) = (116.404, 39.915)
CT_INPUT = (116.404, 39.915)
CT_WGS84_TO_GCJ02 = (116.41024449916938, 39.91640428150164)
CT_GCJ02_TO_BD09 = (116.41036949371029, 39.92133699351021)
CT_BD09_TO_GCJ02_ONESTEP = (116.39762729119315, 39.90865673957631)
CT_GCJ02_TO_WGS84_ONESTEP = (116.39775550083061, 39.91359571849836)

GRS80_QUARTER_MERIDIAN_M = 10_001_965.7293
GRS80_A = 6_378_137.0

HUAIHUA = (110.0, 27.55)  # near 鹤城区, 1 degree west of EPSG:4546's central meridian
LONDON = (-0.1276, 51.5072)
SYDNEY = (151.2, -33.86)
TOKYO = (139.69, 35.68)  # east of the rectangle's 137.8347 E edge: outside too
SEOUL = (126.978, 37.5665)  # not China, but inside the rough rectangle


def random_china(n: int = 10_000, seed: int = 20240611) -> tuple[np.ndarray, np.ndarray]:
    """Points inside the rectangle, 0.1 degree from its edges (the offsets are < 0.01 degree,
    so a point and its converted self are on the same side of the edge)."""
    rng = np.random.default_rng(seed)
    min_lon, min_lat, max_lon, max_lat = crs.CHINA_BBOX
    lon = rng.uniform(min_lon + 0.1, max_lon - 0.1, n)
    lat = rng.uniform(min_lat + 0.1, max_lat - 0.1, n)
    return lon, lat


# --- published GCJ-02 / BD-09 values ----------------------------------------------------------


@pytest.mark.parametrize(("wgs_lat", "wgs_lon", "gcj_lat", "gcj_lon"), EVILTRANSFORM_WGS_GCJ)
def test_wgs84_to_gcj02_matches_eviltransform_table(wgs_lat, wgs_lon, gcj_lat, gcj_lon):
    lon, lat = wgs84_to_gcj02(wgs_lon, wgs_lat)
    assert lon == pytest.approx(gcj_lon, abs=EXACT)
    assert lat == pytest.approx(gcj_lat, abs=EXACT)


@pytest.mark.parametrize(("wgs_lat", "wgs_lon", "gcj_lat", "gcj_lon"), EVILTRANSFORM_WGS_GCJ)
def test_gcj02_to_wgs84_inverts_eviltransform_table(wgs_lat, wgs_lon, gcj_lat, gcj_lon):
    # eviltransform's own exact inverse only promises 0.5 m; ours recovers the WGS point.
    lon, lat = gcj02_to_wgs84(gcj_lon, gcj_lat)
    assert distance_m(lon, lat, wgs_lon, wgs_lat) < 0.001


def test_coordtransform_readme_forward_values():
    assert wgs84_to_gcj02(*CT_INPUT) == pytest.approx(CT_WGS84_TO_GCJ02, abs=EXACT)
    assert gcj02_to_bd09(*CT_INPUT) == pytest.approx(CT_GCJ02_TO_BD09, abs=EXACT)


def test_coordtransform_readme_one_step_bd_inverse():
    # The README's bd09togcj02 is the one-step closed form: equal to ours bit for bit...
    assert bd09_to_gcj02_approx(*CT_INPUT) == pytest.approx(CT_BD09_TO_GCJ02_ONESTEP, abs=EXACT)
    # ...and the iterated inverse stays within the one-step's error (decimetres) of it,
    exact = bd09_to_gcj02(*CT_INPUT)
    assert 0.001 < distance_m(*exact, *CT_BD09_TO_GCJ02_ONESTEP) < 0.25
    # while mapping back onto the input, which the one-step value does not.
    assert gcj02_to_bd09(*exact) == pytest.approx(CT_INPUT, abs=EXACT)
    assert distance_m(*gcj02_to_bd09(*CT_BD09_TO_GCJ02_ONESTEP), *CT_INPUT) > 0.01


def test_coordtransform_readme_one_step_gcj_inverse():
    # gcj02towgs84 there is the one-step approximation (metre-level); eviltransform's tests
    # allow 5 m for it.
    exact = gcj02_to_wgs84(*CT_INPUT)
    assert distance_m(*exact, *CT_GCJ02_TO_WGS84_ONESTEP) < 5.0
    assert wgs84_to_gcj02(*exact) == pytest.approx(CT_INPUT, abs=EXACT)
    assert distance_m(*wgs84_to_gcj02(*CT_GCJ02_TO_WGS84_ONESTEP), *CT_INPUT) > 0.01


def _huaihua_grid() -> tuple[np.ndarray, np.ndarray]:
    lon, lat = np.meshgrid(np.linspace(109.9, 110.1, 21), np.linspace(27.3, 27.6, 31))
    return lon.ravel(), lat.ravel()


def test_cross_check_with_prcoords_around_huaihua():
    lon, lat = _huaihua_grid()

    def ref(fn, xs, ys):  # prcoords works on (lat, lon) tuples, one point at a time
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # it warns when it thinks a point is outside China
            out = np.array([tuple(fn((y, x))) for x, y in zip(xs, ys, strict=True)])
        return out[:, 1], out[:, 0]

    # Forward formulas: same algorithm, independent code.
    np.testing.assert_allclose(wgs84_to_gcj02(lon, lat), ref(prcoords.wgs_gcj, lon, lat), rtol=0, atol=EXACT)
    np.testing.assert_allclose(gcj02_to_bd09(lon, lat), ref(prcoords.gcj_bd, lon, lat), rtol=0, atol=EXACT)
    np.testing.assert_allclose(
        bd09_to_gcj02_approx(lon, lat), ref(prcoords.bd_gcj, lon, lat), rtol=0, atol=EXACT
    )

    # Inverses: prcoords' forward maps ours back onto the input...
    w_lon, w_lat = gcj02_to_wgs84(lon, lat)
    np.testing.assert_allclose(ref(prcoords.wgs_gcj, w_lon, w_lat), (lon, lat), rtol=0, atol=EXACT)
    g_lon, g_lat = bd09_to_gcj02(lon, lat)
    np.testing.assert_allclose(ref(prcoords.gcj_bd, g_lon, g_lat), (lon, lat), rtol=0, atol=EXACT)
    # ...and prcoords' own iterated inverses (which stop at 1e-5 degree steps) agree to 2 cm.
    for ours, theirs in [
        ((w_lon, w_lat), ref(prcoords.gcj_wgs_bored, lon, lat)),
        ((g_lon, g_lat), ref(prcoords.bd_gcj_bored, lon, lat)),
        (bd09_to_wgs84(lon, lat), ref(prcoords.bd_wgs_bored, lon, lat)),
    ]:
        assert distance_m(*ours, *theirs).max() < 0.02


# --- round trips and the iteration ------------------------------------------------------------


def test_round_trip_wgs84_gcj02_within_1cm():
    lon, lat = random_china()
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    shift = distance_m(lon, lat, g_lon, g_lat)
    assert shift.min() > 0  # the offset is applied everywhere inside (it is ~10-700 m)
    assert np.median(shift) > 300
    back_lon, back_lat = gcj02_to_wgs84(g_lon, g_lat)
    assert distance_m(lon, lat, back_lon, back_lat).max() < 0.01
    # The stopping rule: the forward transform of the result is within 1e-9 degrees.
    f_lon, f_lat = wgs84_to_gcj02(back_lon, back_lat)
    assert np.abs(f_lon - g_lon).max() < 1e-9
    assert np.abs(f_lat - g_lat).max() < 1e-9


def test_round_trip_wgs84_bd09_within_1cm():
    lon, lat = random_china()
    b_lon, b_lat = wgs84_to_bd09(lon, lat)
    back_lon, back_lat = bd09_to_wgs84(b_lon, b_lat)
    assert distance_m(lon, lat, back_lon, back_lat).max() < 0.01


def test_round_trip_gcj02_bd09_and_one_step_inverse_is_not_enough():
    lon, lat = random_china()
    b_lon, b_lat = gcj02_to_bd09(lon, lat)
    exact = distance_m(lon, lat, *bd09_to_gcj02(b_lon, b_lat))
    one_step = distance_m(lon, lat, *bd09_to_gcj02_approx(b_lon, b_lat))
    assert exact.max() < 0.01
    assert exact.max() < 0.001
    # The closed form is off by more than 1 cm somewhere (decimetres at worst), so the
    # iteration matters.
    assert one_step.max() > 0.01
    assert one_step.max() < 0.5


def test_inverse_converges_at_the_offset_formulas_kink():
    # sqrt(|lon - 105|) has an infinite slope at 105 E: the fixed point must still converge.
    lon = 105.0 + np.array([0.0, 1e-15, -1e-15, 1e-12, -1e-12, 1e-9, -1e-9, 1e-6, -1e-6])
    lat = np.full(lon.shape, 30.0)
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    back_lon, back_lat = gcj02_to_wgs84(g_lon, g_lat)
    assert distance_m(lon, lat, back_lon, back_lat).max() < 0.001


def test_bd09_to_wgs84_composes_the_two_inverses():
    b = (110.0, 27.55)
    assert bd09_to_wgs84(*b) == pytest.approx(gcj02_to_wgs84(*bd09_to_gcj02(*b)), abs=1e-12)
    assert wgs84_to_bd09(*b) == pytest.approx(gcj02_to_bd09(*wgs84_to_gcj02(*b)), abs=1e-12)


# --- outside China ----------------------------------------------------------------------------


@pytest.mark.parametrize("point", [LONDON, SYDNEY, TOKYO])
@pytest.mark.parametrize(
    "convert",
    [wgs84_to_gcj02, gcj02_to_wgs84, gcj02_to_bd09, bd09_to_gcj02, wgs84_to_bd09, bd09_to_wgs84],
)
def test_identity_outside_china(point, convert):
    assert not in_china(*point)
    assert convert(*point) == point


def test_mixed_array_shifts_only_points_inside():
    lon = np.array([LONDON[0], HUAIHUA[0], SYDNEY[0], SEOUL[0]])
    lat = np.array([LONDON[1], HUAIHUA[1], SYDNEY[1], SEOUL[1]])
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    moved = distance_m(lon, lat, g_lon, g_lat)
    assert moved[[0, 2]].tolist() == [0.0, 0.0]
    assert (moved[[1, 3]] > 100).all()  # Seoul is in the rectangle, so it is shifted too


def test_in_china_rectangle():
    assert in_china(*HUAIHUA) is True
    assert in_china(*SEOUL) is True
    assert in_china(*TOKYO) is False
    # Inclusive edges, as in eviltransform/coordtransform.
    assert in_china(72.004, 0.8293) is True
    assert in_china(137.8347, 55.8271) is True
    assert in_china(72.0039, 30.0) is False
    assert in_china(110.0, 55.8272) is False
    assert in_china(float("nan"), 30.0) is False
    result = in_china(np.array([110.0, -0.1276, 116.4]), np.array([27.5, 51.5, 39.9]))
    assert isinstance(result, np.ndarray)
    assert result.tolist() == [True, False, True]


# --- scalars and arrays -----------------------------------------------------------------------

ALL_CONVERSIONS = [
    wgs84_to_gcj02,
    gcj02_to_wgs84,
    gcj02_to_bd09,
    bd09_to_gcj02,
    bd09_to_gcj02_approx,
    wgs84_to_bd09,
    bd09_to_wgs84,
    lambda x, y: to_cgcs2000(x, y, "gcj02"),
    lambda x, y: from_cgcs2000(x, y, CRS.bd09),
    lambda x, y: to_cgcs2000(x, y, "wgs84"),
    project,
]


@pytest.mark.parametrize("convert", ALL_CONVERSIONS)
def test_scalar_in_float_out(convert):
    for lon, lat in [HUAIHUA, (np.float64(110.0), np.float32(27.55)), (np.array(110.0), 27.55), (110, 27)]:
        out = convert(lon, lat)
        assert isinstance(out, tuple)
        assert len(out) == 2
        assert all(type(v) is float for v in out)


@pytest.mark.parametrize("convert", ALL_CONVERSIONS)
def test_arrays_in_arrays_out(convert):
    lon = np.array([[109.9, 110.0, 110.1], [109.95, 110.05, 111.0]])
    lat = np.array([[27.3, 27.4, 27.5], [27.35, 27.45, 27.6]])
    before = lon.copy(), lat.copy()
    x, y = convert(lon, lat)
    assert isinstance(x, np.ndarray)
    assert isinstance(y, np.ndarray)
    assert x.shape == y.shape == (2, 3)
    assert x.dtype == y.dtype == np.float64
    np.testing.assert_array_equal(lon, before[0])  # inputs untouched
    np.testing.assert_array_equal(lat, before[1])
    # Element by element the same as the scalar path.
    assert (float(x[1, 2]), float(y[1, 2])) == pytest.approx(convert(111.0, 27.6), abs=1e-12)


def test_lists_broadcasting_and_empty_arrays():
    x, y = wgs84_to_gcj02([110.0, 110.1], 27.5)  # a scalar lat for a list of lons
    assert x.shape == y.shape == (2,)
    assert y[0] != y[1]
    x, y = gcj02_to_wgs84(np.array([]), np.array([]))
    assert x.shape == y.shape == (0,)
    x, y = to_cgcs2000(np.array([]), np.array([]), "bd09")
    assert x.shape == y.shape == (0,)
    assert distance_m(np.array([]), np.array([]), np.array([]), np.array([])).shape == (0,)


# --- CGCS2000 ---------------------------------------------------------------------------------


def test_to_cgcs2000_per_system():
    point = (110.0, 27.55)
    assert to_cgcs2000(*point, CRS.wgs84) == point
    assert to_cgcs2000(*point, "cgcs2000") == point
    assert to_cgcs2000(*point, "gcj02") == gcj02_to_wgs84(*point)
    assert to_cgcs2000(*point, CRS.bd09) == bd09_to_wgs84(*point)
    assert to_cgcs2000(*point, " GCJ02 ") == gcj02_to_wgs84(*point)
    assert from_cgcs2000(*point, "wgs84") == point
    assert from_cgcs2000(*point, "gcj02") == wgs84_to_gcj02(*point)
    assert from_cgcs2000(*point, "bd09") == wgs84_to_bd09(*point)


@pytest.mark.parametrize("system", list(CRS))
def test_cgcs2000_round_trip(system):
    lon, lat = random_china(1000, seed=7)
    back = to_cgcs2000(*from_cgcs2000(lon, lat, system), system)
    assert distance_m(lon, lat, *back).max() < 0.01


def test_crs_enum_is_a_str():
    assert CRS("bd09") is CRS.bd09
    assert CRS.gcj02 == "gcj02"
    assert f"{CRS.cgcs2000}" == "cgcs2000"
    assert [c.value for c in CRS] == ["wgs84", "cgcs2000", "gcj02", "bd09"]


# --- pyproj: projections and distances --------------------------------------------------------


def test_epsg4546_central_meridian_is_true_length_and_false_easting():
    lat = np.array([0.0, 10.0, 27.55, 45.0])
    east, north = project(np.full(lat.shape, 111.0), lat)
    np.testing.assert_allclose(east, 500_000.0, rtol=0, atol=1e-6)
    # Gauss-Krüger keeps the central meridian at scale 1: northing = meridian arc length.
    np.testing.assert_allclose(north, distance_m(111.0, 0.0, 111.0, lat), rtol=0, atol=0.001)


def test_epsg4546_huaihua_point():
    east, north = project(*HUAIHUA)
    # One degree west of 111 E at 27.55 N: about 98.8 km west of the false easting.
    assert 401_000 < east < 402_000
    assert 3_048_000 < north < 3_050_000
    # Transverse Mercator point scale k = 1 + x^2 / (2 R^2) (x from the central meridian):
    # a 1 km east-west segment here is lengthened by about 1.2e-4.
    lon2 = HUAIHUA[0] + 0.01
    e2, n2 = project(lon2, HUAIHUA[1])
    grid = math.hypot(e2 - east, n2 - north)
    true = distance_m(*HUAIHUA, lon2, HUAIHUA[1])
    x_mid = (east + e2) / 2 - 500_000
    assert grid / true == pytest.approx(1 + x_mid**2 / (2 * 6_371_000.0**2), abs=2e-6)


def test_unproject_inverts_project():
    lon, lat = _huaihua_grid()
    back_lon, back_lat = unproject(*project(lon, lat))
    np.testing.assert_allclose(back_lon, lon, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, rtol=0, atol=1e-9)
    assert unproject(500_000.0, 0.0) == pytest.approx((111.0, 0.0), abs=1e-9)


def test_web_mercator_defining_formulas():
    lon, lat = HUAIHUA
    x, y = project(lon, lat, epsg=3857)
    assert x == pytest.approx(GRS80_A * math.radians(lon), abs=1e-6)
    assert y == pytest.approx(GRS80_A * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)), abs=1e-6)
    assert unproject(x, y, epsg=3857) == pytest.approx((lon, lat), abs=1e-9)


def test_transformers_are_cached():
    assert crs.transformer(4490, 4546) is crs.transformer(4490, 4546)


def test_distance_published_values():
    assert distance_m(0.0, 0.0, 0.0, 90.0) == pytest.approx(GRS80_QUARTER_MERIDIAN_M, abs=0.001)
    assert distance_m(111.0, 0.0, 111.0, 90.0) == pytest.approx(GRS80_QUARTER_MERIDIAN_M, abs=0.001)
    # Along the equator a geodesic is the equator: one degree is a*pi/180.
    assert distance_m(110.0, 0.0, 111.0, 0.0) == pytest.approx(GRS80_A * math.pi / 180, abs=1e-6)
    assert distance_m(*HUAIHUA, *HUAIHUA) == 0.0


def test_distance_vectorised():
    lon = np.array([110.0, 111.0, 0.0])
    lat = np.array([0.0, 0.0, 0.0])
    d = distance_m(lon, lat, lon + 1.0, 0.0)  # broadcasts a scalar lat2
    assert isinstance(d, np.ndarray)
    assert d.shape == (3,)
    np.testing.assert_allclose(d, GRS80_A * math.pi / 180, rtol=0, atol=1e-6)
    assert type(distance_m(110.0, 27.0, 110.0, 27.1)) is float


# --- invalid input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "words"),
    [
        (float("nan"), 27.5, "lon must be a finite number"),
        (110.0, float("nan"), "lat must be a finite number"),
        (float("inf"), 27.5, "finite"),
        (180.5, 27.5, "lon must be within [-180, 180]"),
        (-180.01, 27.5, "lon must be within [-180, 180]"),
        (110.0, -90.5, "lat must be within [-90, 90]"),
        (np.array([110.0, 200.0, 210.0]), 27.5, "at index 1 (2 bad values)"),
        (np.array([110.0, 110.0]), np.array([27.5, np.nan]), "nan at index 1"),
        ("east", 27.5, "lon must be a number"),
        (None, 27.5, "lon must be a number"),
        (np.array([110.0, 111.0]), np.array([27.0, 28.0, 29.0]), "incompatible shapes"),
    ],
)
def test_invalid_coordinates(lon, lat, words):
    for convert in (wgs84_to_gcj02, gcj02_to_wgs84, bd09_to_wgs84, project):
        with pytest.raises(InvalidCoordinates) as err:
            convert(lon, lat)
        assert words in str(err.value)
    for system in ("gcj02", "wgs84"):
        with pytest.raises(InvalidCoordinates) as err:
            to_cgcs2000(lon, lat, system)
        assert words in str(err.value)
    for args in ((lon, lat, 110.0, 27.5), (110.0, 27.5, lon, lat)):
        with pytest.raises(InvalidCoordinates):
            distance_m(*args)


def test_one_point_takes_the_same_answer_as_arrays():
    """Plain numbers skip numpy (the per-request path); the answers must not differ."""
    assert to_cgcs2000(110, 27.5, "wgs84") == (110.0, 27.5)
    assert to_cgcs2000(180.0, -90.0, "wgs84") == (180.0, -90.0)  # the bounds are allowed
    assert to_cgcs2000(np.float64(110.0), 27.5, "wgs84") == (110.0, 27.5)


def test_spherical_distance_is_within_half_a_percent_of_the_geodesic():
    rng = np.random.default_rng(4)
    lon, lat = rng.uniform(108.5, 111.5, 300), rng.uniform(25.5, 29.5, 300)
    dlon, dlat = rng.uniform(-0.01, 0.01, 300), rng.uniform(-0.01, 0.01, 300)
    exact = distance_m(lon, lat, lon + dlon, lat + dlat)
    sphere = [
        spherical_distance_m(*map(float, p)) for p in zip(lon, lat, lon + dlon, lat + dlat, strict=True)
    ]
    np.testing.assert_allclose(sphere, exact, rtol=0.005)
    assert spherical_distance_m(110.0, 27.55, 110.0, 27.55) == 0.0
    # The photo flag's threshold: 200 m east of a point is not mistaken for 199 m or 201 m.
    assert 199.0 < spherical_distance_m(110.0, 27.55, 110.0 + 200 / 98_700, 27.55) < 201.5


def test_boundary_values_are_valid():
    assert wgs84_to_gcj02(180.0, -90.0) == (180.0, -90.0)
    assert to_cgcs2000(-180.0, 90.0, "bd09") == (-180.0, 90.0)


@pytest.mark.parametrize("name", ["gps", "epsg:4326", "", "wgs-84", None, 4326])
def test_unknown_crs(name):
    with pytest.raises(InvalidCoordinates, match="unknown coordinate system"):
        to_cgcs2000(110.0, 27.5, name)
    with pytest.raises(InvalidCoordinates, match="wgs84, cgcs2000, gcj02, bd09"):
        from_cgcs2000(110.0, 27.5, name)


def test_invalid_projected_input():
    with pytest.raises(InvalidCoordinates):
        unproject(float("nan"), 3_000_000.0)
    with pytest.raises(InvalidCoordinates, match="unknown EPSG"):
        project(110.0, 27.5, epsg=999_999)


def test_invalid_coordinates_is_a_422_value_error():
    from api.errors import status_of

    error = InvalidCoordinates("lat must be within [-90, 90] degrees: 91.0")
    assert isinstance(error, ValueError)
    assert isinstance(error, InvalidInput)
    assert status_of(error) == 422
    assert error.code == "invalid_coordinates"
    try:
        wgs84_to_gcj02(110.0, 91.0)
    except InvalidCoordinates as caught:
        assert caught.errors == [{"field": "lat", "message": "must be within [-90, 90] degrees"}]
        assert "91.0" in caught.detail
