"""Responsibility areas (责任区域): who owns a compound, a park, a road section, a site."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, Response, UploadFile
from pydantic import BaseModel, Field

from api.auth import STAFF, AuthRoute, DbSession, require
from api.routers.geo import Crs, Lat, Lon
from api.uploads import saved_upload
from geo import responsibility
from geo.crs import CRS, to_cgcs2000
from geo.errors import InvalidInput

router = APIRouter(
    prefix="/api/v1/responsibility-areas", tags=["responsibility areas"], route_class=AuthRoute
)

EDITORS = ("admin", "planner")
Bbox = Annotated[
    str | None,
    Query(description="minLon,minLat,maxLon,maxLat (CGCS2000/WGS 84)", pattern=r"^-?[\d.]+(,-?[\d.]+){3}$"),
]
Kind = Annotated[str | None, Query(description=f"one of {', '.join(responsibility.KINDS)}")]


def _bbox(bbox: str | None) -> tuple[float, float, float, float] | None:
    if not bbox:
        return None
    x0, y0, x1, y1 = (float(v) for v in bbox.split(","))
    if not (x0 < x1 and y0 < y1):
        raise InvalidInput(
            "bbox must be minLon,minLat,maxLon,maxLat",
            errors=[{"field": "bbox", "message": "min must be below max"}],
        )
    return x0, y0, x1, y1


@router.get("", summary="Areas by kind, owner and bounding box", dependencies=[require(*STAFF)])
async def list_areas(
    session: DbSession,
    kind: Kind = None,
    owner: Annotated[str | None, Query(description="owner unit code")] = None,
    bbox: Bbox = None,
    format: Annotated[Literal["json", "geojson"], Query(description="geojson: a FeatureCollection")] = "json",
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    areas = await responsibility.list_areas(
        session, responsibility.AreaQuery(kind, owner, _bbox(bbox), limit, offset)
    )
    return responsibility.as_feature_collection(areas) if format == "geojson" else areas


@router.get(
    "/overlaps",
    summary="Areas of one kind (and of common classes) overlapping by more than 1 m²",
    dependencies=[require(*EDITORS)],
)
async def overlaps(session: DbSession, kind: Kind = None) -> list[dict[str, Any]]:
    return await responsibility.overlaps(session, kind)


@router.get("/at", summary="The areas holding a point, smallest first", dependencies=[require(*STAFF)])
async def at(
    session: DbSession,
    lon: Lon,
    lat: Lat,
    crs: Crs = CRS.wgs84,
    kind: Kind = None,
    category: Annotated[
        str | None, Query(pattern=r"^\d{5}$", description="only areas applying to this matter class")
    ] = None,
) -> dict[str, Any]:
    x, y = to_cgcs2000(lon, lat, crs)
    return {
        "location": {"lon": x, "lat": y, "crs": "cgcs2000"},
        "areas": await responsibility.areas_at(session, x, y, kind, category),
    }


@router.get("/{area_id}", summary="One area with its geometry", dependencies=[require(*STAFF)])
async def get(session: DbSession, area_id: int) -> dict[str, Any]:
    return await responsibility.get(session, area_id)


class NewArea(BaseModel):
    name: str = Field(description="e.g. 锦绣花园")
    kind: str = Field(description=f"one of {', '.join(responsibility.KINDS)}")
    owner: str = Field(description="owner unit code, e.g. wy-01")
    matter_classes: list[str] | None = Field(default=None, description="the classes it applies to; null: all")
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon, lon/lat")
    crs: CRS = Field(default=CRS.cgcs2000, description="coordinate system of the geometry's lon/lat")


class AreaChanges(BaseModel):
    name: str | None = None
    kind: str | None = None
    owner: str | None = None
    matter_classes: list[str] | None = Field(default=None, description="null: all classes")
    geometry: dict[str, Any] | None = None
    crs: CRS = CRS.cgcs2000


@router.post("", status_code=201, summary="Draw a new area", dependencies=[require(*EDITORS)])
async def create(body: NewArea, session: DbSession) -> dict[str, Any]:
    area = await responsibility.create(
        session,
        responsibility.AreaInput(
            body.name, body.kind, body.owner, body.geometry, body.matter_classes, body.crs
        ),
    )
    await session.commit()
    return area


@router.patch("/{area_id}", summary="Change an area's fields", dependencies=[require(*EDITORS)])
async def update(area_id: int, body: AreaChanges, session: DbSession) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    for key in ("name", "kind", "owner", "geometry"):  # null means "leave out", not "clear"
        if key in changes and changes[key] is None:
            raise InvalidInput(f"{key} cannot be null", errors=[{"field": key, "message": "cannot be null"}])
    changes.setdefault("crs", body.crs)
    area = await responsibility.update(session, area_id, changes)
    await session.commit()
    return area


@router.delete("/{area_id}", status_code=204, summary="Delete an area", dependencies=[require(*EDITORS)])
async def delete(area_id: int, session: DbSession) -> Response:
    await responsibility.delete(session, area_id)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/import", summary="Import a GeoJSON or GeoPackage (all or nothing)", dependencies=[require(*EDITORS)]
)
async def import_file(
    session: DbSession,
    file: Annotated[UploadFile, File(description="a .geojson or .gpkg file, any CRS")],
) -> dict[str, Any]:
    async with saved_upload(file, (".geojson", ".json", ".gpkg")) as path:
        count = await responsibility.import_file(session, path, file.filename or path.name)
    await session.commit()
    return {"imported": count}
