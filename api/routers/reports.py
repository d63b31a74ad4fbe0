"""Reports: the collectors' submission (API.md), other channels' intake, reading and sync."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, model_validator

from api.auth import AuthRoute, CurrentUser, DbSession, Grids, copies, require
from api.uploads import Form, read_form
from cases import reports
from cases.photo_store import PhotoStore, StagedFile
from cases.photos import CheckedPhoto, check_count, check_photos
from geo.crs import CRS
from geo.errors import InvalidInput
from geo.geocode import resolve as resolve_place

router = APIRouter(prefix="/api/v1/reports", tags=["reports"], route_class=AuthRoute)


class Location(BaseModel):
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    crs: CRS = CRS.wgs84
    accuracy_m: float | None = Field(default=None, ge=0)


class ReportPart(BaseModel):
    """The JSON part ``report`` of API.md."""

    client_id: str = Field(min_length=8, max_length=100)
    kind: Literal["component", "event"]
    category: str = Field(pattern=r"^\d{5}$")
    description: str = Field(default="", max_length=2000)
    location: Location
    address: str | None = Field(default=None, max_length=500)
    component_code: str | None = Field(default=None, pattern=r"^\d{16,17}$")
    observed_at: datetime | None = None

    def to_input(self, client_id: str | None) -> reports.ReportInput:
        return reports.ReportInput(
            kind=self.kind,
            category=self.category,
            description=self.description,
            lon=self.location.lon,
            lat=self.location.lat,
            crs=self.location.crs.value,
            accuracy_m=self.location.accuracy_m,
            address=self.address,
            component_code=self.component_code,
            observed_at=self.observed_at,
            client_id=client_id,
        )


class CallerPart(BaseModel):
    name: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, pattern=r"^[0-9+\- ]{3,20}$")


class IntakePart(ReportPart):
    """A report from another channel; ``client_id`` is optional here. The location is a map
    point, or ``place``: the ``ref`` of a candidate of /geocode/intake-candidates."""

    client_id: str | None = Field(default=None, max_length=100)  # type: ignore[assignment]
    source: Literal["hotline", "public", "inspection"]
    caller: CallerPart = Field(default_factory=CallerPart)
    location: Location | None = None  # type: ignore[assignment]
    place: str | None = Field(default=None, max_length=60, description="ref of a geocoding candidate")

    @model_validator(mode="after")
    def _where(self) -> IntakePart:
        if self.location is None and self.place is None:
            raise ValueError("give a location (map point) or a place (a geocoding candidate's ref)")
        return self


def parse_part(model: type[BaseModel], raw: str | bytes | None, part: str) -> Any:
    """A JSON form part validated by ``model``; 422 ``invalid_input`` naming each bad field."""
    if raw is None:
        raise InvalidInput(f"the part {part!r} is missing", errors=[{"field": part, "message": "required"}])
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {"field": ".".join([part, *(str(x) for x in e["loc"])]), "message": e["msg"]}
            for e in exc.errors()
        ]
        raise InvalidInput("; ".join(f"{x['field']}: {x['message']}" for x in errors), errors=errors) from exc


def photo_store(request: Request) -> PhotoStore:
    return request.app.state.photo_store


def photo_files(form: Form, minimum: int, maximum: int = 9) -> list[tuple[str, StagedFile]]:
    """The staged files of the parts ``photos`` (422 for files under any other name, or too few
    or too many)."""
    unexpected = [u.field for u in form.files if u.field != "photos"]
    if unexpected:
        raise InvalidInput(
            "files go in parts named 'photos'", errors=[{"field": unexpected[0], "message": "unexpected"}]
        )
    check_count(form.files, minimum, maximum)
    return [("photos", u.staged) for u in form.files]


async def form_with_files(
    request: Request, model: type[BaseModel], part: str, minimum: int, default: str | None = None
) -> tuple[Any, Form, list[tuple[str, StagedFile]]]:
    """A multipart body: the JSON part ``part`` validated by ``model``, the form (the caller
    discards it on failure) and its photo files, staged but not yet decoded."""
    form = await read_form(request, photo_store(request))
    try:
        return parse_part(model, form.fields.get(part, default), part), form, photo_files(form, minimum)
    except BaseException:
        form.discard()
        raise


async def form_with_photos(
    request: Request, model: type[BaseModel], part: str, minimum: int, default: str | None = None
) -> tuple[Any, list[CheckedPhoto]]:
    """A multipart body: the JSON part ``part`` validated by ``model``, and the checked photos.
    Every staged file is discarded on any failure."""
    body, form, files = await form_with_files(request, model, part, minimum, default)
    try:
        return body, await check_photos(files, minimum)
    except BaseException:
        form.discard()
        raise


@router.post(
    "",
    status_code=201,
    summary="Submit a report with photos (idempotent on client_id)",
    dependencies=[require("collector")],
)
async def submit(request: Request, user: CurrentUser, session: DbSession, grids: Grids) -> JSONResponse:
    part, form, files = await form_with_files(request, ReportPart, "report", minimum=1)
    try:
        body, created = await reports.submit(
            session,
            photo_store(request),
            user,
            part.to_input(part.client_id),
            files,
            grids,
            kept.catalogue if (kept := copies(request)) else None,
        )
    except BaseException:
        form.discard()
        raise
    if not created:
        form.discard()  # a retry: the first request's files are the stored ones
    # Thumbnails and public renderings are made on first request (photos router), never here.
    return JSONResponse(
        body, status_code=201 if created else 200, headers={"Location": f"/api/v1/reports/{body['id']}"}
    )


@router.post(
    "/intake",
    status_code=201,
    summary="Record a report from the 12345 hotline, the public or an inspection",
    dependencies=[require("operator", "supervisor")],
)
async def intake(request: Request, user: CurrentUser, session: DbSession, grids: Grids) -> JSONResponse:
    form, files = Form(), []
    if request.headers.get("content-type", "").startswith("multipart/"):
        part, form, files = await form_with_files(request, IntakePart, "report", minimum=0)
    else:
        part = parse_part(IntakePart, await request.body(), "report")
    try:
        if part.location is None:  # chosen by address: the location comes from the database
            chosen = await resolve_place(session, part.place, index=grids)
            part.location = Location(
                lon=chosen["location"]["lon"], lat=chosen["location"]["lat"], crs=CRS.cgcs2000
            )
            part.address = part.address or chosen["name"]
        body = await reports.intake(
            session,
            photo_store(request),
            user,
            part.source,
            part.to_input(part.client_id),
            reports.Caller(part.caller.name, part.caller.phone),
            files,
            grids,
            kept.catalogue if (kept := copies(request)) else None,
        )
    except BaseException:
        form.discard()
        raise
    return JSONResponse(body, status_code=201, headers={"Location": f"/api/v1/reports/{body['id']}"})


@router.get("/{report_id}", summary="One report (a collector sees only their own)")
async def get(report_id: int, user: CurrentUser, session: DbSession) -> dict[str, Any]:
    return await reports.get(session, report_id, user)


@router.get("", summary="The caller's own reports changed since a time (the app's sync)")
async def changed_since(
    user: CurrentUser,
    session: DbSession,
    since: Annotated[datetime | None, Query(description="ISO 8601 time with offset")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[dict[str, Any]]:
    return await reports.changed_since(session, user, since, limit)
