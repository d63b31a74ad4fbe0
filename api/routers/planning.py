"""Grid planning (网格规划) for planners and administrators: grid files in and out, collector beats."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from starlette.background import BackgroundTask

from api.auth import AuthRoute, CurrentUser, DbSession, require
from api.uploads import MB
from geo.errors import InvalidInput, NotFound, PayloadTooLarge
from grids import balance, beats, files

router = APIRouter(
    prefix="/api/v1", tags=["planning"], dependencies=[require("planner", "admin")], route_class=AuthRoute
)

MAX_UPLOAD_BYTES = 200 * MB  # the whole city as GeoPackage is ~10 MB
# What an upload may hold: one GeoPackage/GeoJSON/zip, or the parts of one Shapefile.
UPLOAD_SUFFIXES = {".gpkg", ".zip", ".geojson", ".json", ".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix"}

CommunityCode = Annotated[str | None, Query(pattern=r"^\d{12}$", description="12-digit community code")]


@router.get("/grids/export", summary="The grids as GeoPackage, zipped Shapefile or GeoJSON (EPSG:4490)")
async def export_grids(
    session: DbSession,
    format: Literal["gpkg", "shp", "geojson"] = "gpkg",
    community: CommunityCode = None,
    area: Annotated[str | None, Query(max_length=16, description="management area code, e.g. JK")] = None,
) -> FileResponse:
    ff = files.FORMATS[format]
    name = "unit_grids" + "".join(f"-{x}" for x in (community, area) if x) + ff.suffix
    folder = files.scratch_dir()
    try:
        path, count = await files.export_grids(session, folder / name, format, community, area)
    except BaseException:
        files.remove_dir(folder)
        raise
    return FileResponse(
        path,
        media_type=ff.media_type,
        filename=name,
        headers={"X-Grid-Count": str(count)},
        background=BackgroundTask(files.remove_dir, folder),
    )


async def _save(uploads: list[UploadFile], folder: Path) -> Path:
    """Copy the upload into ``folder``; the dataset to open (the .shp of a Shapefile's parts)."""
    total = 0
    saved: list[Path] = []
    for upload in uploads:
        name = Path(upload.filename or "").name
        if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
            raise InvalidInput(
                "send a .gpkg, .geojson, a zipped Shapefile, or the .shp/.shx/.dbf/.prj of one",
                errors=[
                    {"field": "file", "message": f"{name or 'a part without a file name'}: not a grid file"}
                ],
            )
        path = folder / name
        with path.open("wb") as out:
            while chunk := await upload.read(MB):
                total += len(chunk)
                if total > MAX_UPLOAD_BYTES:
                    raise PayloadTooLarge(f"grid files are limited to {MAX_UPLOAD_BYTES // MB} MB")
                out.write(chunk)
        saved.append(path)
    datasets = [p for p in saved if p.suffix.lower() in {".gpkg", ".zip", ".geojson", ".json", ".shp"}]
    if len(datasets) != 1:
        raise InvalidInput(
            "send one grid file (or the parts of one Shapefile)",
            errors=[
                {
                    "field": "file",
                    "message": f"{len(datasets)} datasets: {', '.join(p.name for p in datasets)}",
                }
            ],
        )
    return datasets[0]


@router.post(
    "/grids/import",
    summary="Replace communities' grids from a file; dry run by default (422 with every reason if invalid)",
)
async def import_grids(
    session: DbSession,
    file: Annotated[
        list[UploadFile], File(description=".gpkg, .geojson, zipped Shapefile, or .shp+.shx+.dbf+.prj")
    ],
    dry_run: Annotated[bool, Query(description="true: plan and validation report only")] = True,
    community: CommunityCode = None,
) -> dict[str, Any]:
    folder = files.scratch_dir()
    try:
        path = await _save(file, folder)
        outcome = await files.import_grids(session, path, community=community, apply_changes=not dry_run)
        if outcome.applied:
            await session.commit()
        return outcome.as_dict()
    finally:
        await asyncio.to_thread(files.remove_dir, folder)


@router.get("/beats", summary="Collectors' beats (责任网格): grids, m², report load, and the balance")
async def beats_summary(session: DbSession) -> dict[str, Any]:
    return await beats.beats_summary(session)


async def _existing_user(username: str, session: DbSession) -> str:
    # A dependency: an unknown user is 404 before the body is validated (API.md order).
    if not await session.scalar(text("SELECT 1 FROM users WHERE username = :u"), {"u": username}):
        raise NotFound(f"no user {username}")
    return username


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grids: list[str] = Field(
        min_length=1, max_length=10_000, description="grid codes moved to this collector"
    )


@router.put("/beats/{username}", summary="Move grids to a collector's beat (the others stay where they are)")
async def assign(
    username: Annotated[str, Depends(_existing_user)],
    body: AssignIn,
    session: DbSession,
    planner: CurrentUser,
) -> dict[str, Any]:
    result = await beats.assign(session, body.grids, username, planner.id)
    await session.commit()
    return result


class SuggestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=2000, description="number of collectors")
    area: str | None = Field(
        default=None, max_length=16, description="one management area, e.g. JK; all if absent"
    )
    weights: dict[Literal["area", "load"], Annotated[float, Field(ge=0)]] | None = Field(
        default=None, description='e.g. {"area": 0.5, "load": 0.5} (the default)'
    )


@router.post("/beats/suggest", summary="Balanced contiguous beats for n collectors (nothing is changed)")
async def suggest(body: SuggestIn, session: DbSession) -> dict[str, Any]:
    suggestion = await balance.suggest(session, body.n, body.area, body.weights)
    geojson = await balance.beats_geojson(
        session,
        suggestion.assignment,
        {b["index"]: {k: v for k, v in b.items() if k != "index"} for b in suggestion.beats},
    )
    return {**suggestion.as_dict(), "geojson": geojson}


class AcceptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignment: dict[str, int] = Field(
        min_length=1, description="grid code → beat index (from suggest, maybe edited)"
    )
    collectors: dict[int, str] = Field(min_length=1, description="beat index → collector username")


@router.post("/beats/accept", summary="Write a (possibly edited) suggestion to the beats, all or nothing")
async def accept(body: AcceptIn, session: DbSession, planner: CurrentUser) -> dict[str, Any]:
    result = await balance.accept(session, body.assignment, body.collectors, planner.id)
    await session.commit()
    return result
