"""GPS tracks of collectors: the app's batches in, tracks out for the command center (API.md)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from api.auth import AuthRoute, CurrentUser, DbSession, require
from api.uploads import MB, bounded_body
from geo.crs import CRS
from geo.errors import InvalidInput, PayloadTooLarge
from grids import tracks

router = APIRouter(prefix="/api/v1/tracks", tags=["tracks"], route_class=AuthRoute)

# 10,000 points of ~150 bytes fit with room for verbose clients; beyond that the body is refused
# unparsed, and drained up to a cap so that the client can read the 413.
MAX_BODY_BYTES = 8 * MB
DRAIN_CAP_BYTES = 64 * MB
MAX_ERRORS = 50  # a batch of garbage names its first bad fields, not 10,000 of them


class PointPart(BaseModel):
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    crs: CRS = CRS.wgs84
    accuracy_m: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    t: AwareDatetime


class TrackBatch(BaseModel):
    """``{"points": [...]}``: at most ``tracks.MAX_POINTS`` (more is a 413, not a 422)."""

    points: list[PointPart] = Field(min_length=1)

    def to_points(self) -> list[tracks.TrackPoint]:
        return [tracks.TrackPoint(p.t, p.lon, p.lat, p.crs.value, p.accuracy_m) for p in self.points]


def _parse(raw: bytes) -> TrackBatch:
    """422 naming each bad field (``points.17.lon``); 413 for more than ``MAX_POINTS`` points,
    counted before the points are validated."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(
            f"the body is not JSON: {exc}", errors=[{"field": "body", "message": "invalid JSON"}]
        ) from exc
    points = data.get("points") if isinstance(data, dict) else None
    if isinstance(points, list) and len(points) > tracks.MAX_POINTS:
        raise PayloadTooLarge(
            f"at most {tracks.MAX_POINTS} points a call, {len(points)} sent",
            errors=[{"field": "points", "message": f"at most {tracks.MAX_POINTS}"}],
        )
    try:
        return TrackBatch.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(x) for x in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors()[:MAX_ERRORS]
        ]
        raise InvalidInput("; ".join(f"{x['field']}: {x['message']}" for x in errors), errors=errors) from exc


@router.post(
    "",
    summary="Store a batch of the caller's GPS fixes (resending a batch is harmless)",
    dependencies=[require("collector")],
)
async def post_track(request: Request, user: CurrentUser, session: DbSession) -> dict[str, int]:
    batch = _parse(await bounded_body(request, MAX_BODY_BYTES, DRAIN_CAP_BYTES))
    accepted, duplicates = await tracks.record(session, user.id, batch.to_points())
    await session.commit()
    return {"accepted": accepted, "duplicates": duplicates}


@router.get(
    "",
    summary="A collector's track in time order (collectors: only their own)",
    dependencies=[require("collector", *tracks.READ_ALL)],
)
async def get_track(
    user: CurrentUser,
    session: DbSession,
    collector: Annotated[str | None, Query(description="username; omitted: the caller")] = None,
    since: Annotated[AwareDatetime | None, Query(alias="from", description="from this time on")] = None,
    until: Annotated[AwareDatetime | None, Query(alias="to", description="before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=tracks.MAX_POINTS)] = tracks.MAX_POINTS,
) -> JSONResponse:
    """``[{"t", "lon", "lat", "accuracy_m", "grid"}]``, CGCS2000; ``from`` inclusive, ``to`` exclusive."""
    collector_id = await tracks.readable_collector(session, user, collector)
    # Up to 10,000 plain dicts: straight to JSON, without FastAPI's per-item encoding.
    return JSONResponse(await tracks.read(session, collector_id, since, until, limit))
