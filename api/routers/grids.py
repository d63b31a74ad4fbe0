"""The grid system for planners: the validation report."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.auth import AuthRoute, DbSession, require
from grids.validation import Tolerances, as_geojson, validate

router = APIRouter(prefix="/api/v1/grids", tags=["grids"], route_class=AuthRoute)


@router.get(
    "/validation",
    summary="Grid validation report (JSON or GeoJSON for QGIS)",
    dependencies=[require("planner", "admin")],
)
async def validation(
    session: DbSession,
    format: Annotated[
        Literal["json", "geojson"], Query(description="geojson: problem geometries only")
    ] = "json",
    tolerance_m2: Annotated[float, Query(gt=0, description="gaps and overlaps below this are ignored")] = 1.0,
    min_area_m2: Annotated[float, Query(gt=0)] = Tolerances.min_area_m2,
    max_area_m2: Annotated[float, Query(gt=0)] = Tolerances.max_area_m2,
) -> dict[str, Any]:
    tol = Tolerances(tolerance_m2, tolerance_m2, tolerance_m2, min_area_m2, max_area_m2)
    report = await validate(session, tol)
    return as_geojson(report) if format == "geojson" else report
