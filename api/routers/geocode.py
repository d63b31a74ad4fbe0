"""Geocoding: a readable place description for a point, places for what a caller says."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import STAFF, AuthRoute, CurrentUser, DbSession, Grids, require
from api.routers.geo import Crs, Lat, Lon
from geo import geocode
from geo.crs import CRS

router = APIRouter(prefix="/api/v1/geocode", tags=["geocode"], route_class=AuthRoute)

Q = Annotated[str, Query(min_length=1, max_length=100, description="what the caller says, as typed")]
Near = Annotated[
    str | None,
    Query(
        pattern=r"^\s*-?\d+(\.\d+)?\s*,\s*-?\d+(\.\d+)?\s*$",
        description="lon,lat in crs: candidates of equal match come nearest first",
    ),
]


def _near(near: str | None) -> tuple[float, float] | None:
    if near is None:
        return None
    lon, lat = (float(v) for v in near.split(","))
    return lon, lat


@router.get("/reverse", summary="The place description of a point (grid, door plate, landmark, component)")
async def reverse(
    _: CurrentUser, session: DbSession, grids: Grids, lon: Lon, lat: Lat, crs: Crs = CRS.wgs84
) -> dict[str, Any]:
    return await geocode.reverse(session, lon, lat, grids, crs=crs)


@router.get(
    "/search",
    summary="Roads, door plates, landmarks, communities and components matching a text",
    dependencies=[require(*STAFF, "collector")],
)
async def search(
    session: DbSession,
    grids: Grids,
    q: Q,
    near: Near = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    crs: Crs = CRS.wgs84,
) -> list[dict[str, Any]]:
    return await geocode.search(session, q, _near(near), limit, crs=crs, index=grids)


@router.get(
    "/intake-candidates",
    summary="Places for the hotline intake form, as the operator types",
    dependencies=[require("operator", "supervisor")],
)
async def intake_candidates(
    session: DbSession, grids: Grids, q: Q, near: Near = None, crs: Crs = CRS.wgs84
) -> list[dict[str, Any]]:
    return await geocode.search(session, q, _near(near), 8, crs=crs, index=grids)


@router.get(
    "/places/{ref}",
    summary="The place a candidate's ref names (what intake stores for the chosen one)",
    dependencies=[require(*STAFF, "collector")],
)
async def place(session: DbSession, grids: Grids, ref: str, crs: Crs = CRS.wgs84) -> dict[str, Any]:
    return await geocode.resolve(session, ref, crs=crs, index=grids)
