"""Reference data: the catalogue of matter classes and the responsible units."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.auth import STAFF, AuthRoute, CurrentUser, DbSession, require
from cases.catalogue import list_matter_classes
from geo.units import list_units

router = APIRouter(prefix="/api/v1", tags=["reference"], route_class=AuthRoute)


@router.get("/categories", summary="Matter classes the app offers (GB/T 47678.5-2026)")
async def categories(
    _: CurrentUser,
    session: DbSession,
    kind: Annotated[Literal["component", "event"] | None, Query(description="Only this kind")] = None,
) -> list[dict[str, Any]]:
    return await list_matter_classes(session, kind)


@router.get("/units", summary="Responsible units", dependencies=[require(*STAFF)])
async def units(
    session: DbSession,
    kind: Annotated[str | None, Query(description="Only units of this kind")] = None,
) -> list[dict[str, Any]]:
    return await list_units(session, kind)
