"""Reports: the collectors' submission (API.md), other channels' intake, reading and sync."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, model_validator

from api.auth import AuthRoute, CurrentUser, DbSession, Grids, require
from api.uploads import Form, read_form
from cases import reports
from cases.photo_store import PhotoStore
from cases.photos import CheckedPhoto, check_photos, discard
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


async def checked_photos(form: Form, minimum: int, maximum: int = 9) -> list[CheckedPhoto]:
    unexpected = [u.field for u in form.files if u.field != "photos"]
    if unexpected:
        form.discard()
        raise InvalidInput(
            "files go in parts named 'photos'", errors=[{"field": unexpected[0], "message": "unexpected"}]
        )
    try:
        return await check_photos([("photos", u.staged) for u in form.files], minimum, maximum)
    except BaseException:
        form.discard()
        raise


async def form_with_photos(
    request: Request, model: type[BaseModel], part: str, minimum: int, default: str | None = None
) -> tuple[Any, list[CheckedPhoto]]:
    """A multipart body: the JSON part ``part`` validated by ``model``, and the checked photos.
    Every staged file is discarded on any failure."""
    form = await read_form(request, photo_store(request))
    try:
        body = parse_part(model, form.fields.get(part, default), part)
    except BaseException:
        form.discard()
        raise
    return body, await checked_photos(form, minimum)


@router.post(
    "",
    status_code=201,
    summary="Submit a report with photos (idempotent on client_id)",
    dependencies=[require("collector")],
)
async def submit(request: Request, user: CurrentUser, session: DbSession, grids: Grids) -> JSONResponse:
    store = photo_store(request)
    part, photos = await form_with_photos(request, ReportPart, "report", minimum=1)
    try:
        body, created = await reports.submit(
            session, store, user, part.to_input(part.client_id), photos, grids
        )
    except BaseException:
        discard(photos)
        raise
    if not created:
        discard(photos)  # a retry: the first request's files are the stored ones
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
    store = photo_store(request)
    photos: list[CheckedPhoto] = []
    if request.headers.get("content-type", "").startswith("multipart/"):
        part, photos = await form_with_photos(request, IntakePart, "report", minimum=0)
    else:
        part = parse_part(IntakePart, await request.body(), "report")
    if part.location is None:  # chosen by address: the location comes from the database
        chosen = await resolve_place(session, part.place, index=grids)
        part.location = Location(
            lon=chosen["location"]["lon"], lat=chosen["location"]["lat"], crs=CRS.cgcs2000
        )
        part.address = part.address or chosen["name"]
    try:
        body = await reports.intake(
            session,
            store,
            user,
            part.source,
            part.to_input(part.client_id),
            reports.Caller(part.caller.name, part.caller.phone),
            photos,
            grids,
        )
    except BaseException:
        discard(photos)
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
