"""Components (部件): query, snap, check, register and import."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from pydantic import BaseModel, Field

from api.auth import STAFF, AuthRoute, CurrentUser, DbSession, require
from api.routers.geo import Crs, Lat, Lon
from api.uploads import saved_upload
from geo import components
from geo.crs import CRS, to_cgcs2000
from geo.errors import InvalidInput

router = APIRouter(prefix="/api/v1/components", tags=["components"], route_class=AuthRoute)

Bbox = Annotated[
    str | None,
    Query(description="minLon,minLat,maxLon,maxLat (CGCS2000/WGS 84)", pattern=r"^-?[\d.]+(,-?[\d.]+){3}$"),
]
ClassCode = Annotated[str, Query(pattern=r"^\d{5}$", description="5-digit component class, e.g. 01001")]


@router.get(
    "", summary="Components by code prefix, class, owner and bounding box", dependencies=[require(*STAFF)]
)
async def search(
    session: DbSession,
    code: Annotated[str | None, Query(pattern=r"^\d{1,17}$", description="code or code prefix")] = None,
    class_code: Annotated[str | None, Query(alias="class", pattern=r"^\d{2}(\d{3})?$")] = None,
    owner: Annotated[str | None, Query(description="owner unit code")] = None,
    bbox: Bbox = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    box = None
    if bbox:
        box = tuple(float(v) for v in bbox.split(","))
        if not (box[0] < box[2] and box[1] < box[3]):
            raise InvalidInput(
                "bbox must be minLon,minLat,maxLon,maxLat",
                errors=[{"field": "bbox", "message": "min must be below max"}],
            )
    return await components.search(
        session, components.ComponentQuery(code, class_code, owner, box, limit, offset)
    )


@router.get("/snap", summary="The nearest component of a class within a tolerance")
async def snap(
    _: CurrentUser,
    session: DbSession,
    lon: Lon,
    lat: Lat,
    class_code: Annotated[str, Query(alias="class", pattern=r"^\d{5}$")],
    crs: Crs = CRS.wgs84,
    tolerance_m: Annotated[float, Query(gt=0, le=200)] = components.SNAP_TOLERANCE_M,
) -> dict[str, Any]:
    x, y = to_cgcs2000(lon, lat, crs)
    return {
        "component": await components.snap(session, x, y, class_code, tolerance_m),
        "tolerance_m": tolerance_m,
    }


@router.get("/check", summary="Does a code exist, match the class and lie near the point?")
async def check(
    _: CurrentUser,
    session: DbSession,
    code: Annotated[str, Query(min_length=1, max_length=20)],
    lon: Lon,
    lat: Lat,
    class_code: Annotated[str, Query(alias="class", pattern=r"^\d{5}$")],
    crs: Crs = CRS.wgs84,
) -> dict[str, Any]:
    x, y = to_cgcs2000(lon, lat, crs)
    return await components.check(session, code, class_code, x, y)


@router.get("/{code}", summary="One component", dependencies=[require(*STAFF, "collector")])
async def get(session: DbSession, code: str) -> dict[str, Any]:
    return await components.get(session, code)


class Location(BaseModel):
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    crs: CRS = CRS.wgs84


class NewComponent(BaseModel):
    code: str = Field(pattern=r"^\d{16,17}$", description="17 digits (16-digit legacy codes are widened)")
    class_code: str = Field(alias="class", pattern=r"^\d{5}$")
    location: Location
    owner: str | None = Field(default=None, description="owner unit code")
    status: str = "in_use"
    attributes: dict[str, Any] = Field(default_factory=dict)


@router.post("", status_code=201, summary="Register a component", dependencies=[require("admin", "planner")])
async def register(body: NewComponent, session: DbSession) -> dict[str, Any]:
    x, y = to_cgcs2000(body.location.lon, body.location.lat, body.location.crs)
    created = await components.register(
        session,
        components.NewComponent(body.code, body.class_code, x, y, body.owner, body.status, body.attributes),
    )
    await session.commit()
    return created


@router.post(
    "/import",
    summary="Import GeoJSON, GeoPackage or CSV (all or nothing)",
    dependencies=[require("admin", "planner")],
)
async def import_file(
    session: DbSession,
    file: Annotated[UploadFile, File(description="a .geojson, .gpkg or .csv file")],
    crs: Annotated[CRS | None, Query(description="CRS of CSV lon/lat columns (default wgs84)")] = None,
) -> dict[str, Any]:
    async with saved_upload(file, (".geojson", ".json", ".gpkg", ".csv")) as path:
        items = components.read_file(path, crs)
    count = await components.import_components(session, items)
    await session.commit()
    return {"imported": count}
