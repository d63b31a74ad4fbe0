"""Where things are: the point locator."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import AuthRoute, CurrentUser, DbSession
from geo.crs import CRS
from geo.locator import locate as locate_point

router = APIRouter(prefix="/api/v1", tags=["geo"], route_class=AuthRoute)

Lon = Annotated[float, Query(ge=-180, le=180, description="Longitude in decimal degrees")]
Lat = Annotated[float, Query(ge=-90, le=90, description="Latitude in decimal degrees")]
Crs = Annotated[CRS, Query(description="Coordinate system of lon/lat: wgs84, cgcs2000, gcj02 or bd09")]


@router.get("/locate", summary="Which unit grid, community, street and area a point lies in")
async def locate(
    _: CurrentUser, session: DbSession, lon: Lon, lat: Lat, crs: Crs = CRS.wgs84
) -> dict[str, Any]:
    return (await locate_point(session, lon, lat, crs)).as_dict()
